#include "worker/version.h"

namespace tessera {

const char* TesseraVersion() { return "0.1.0"; }

}  // namespace tessera
