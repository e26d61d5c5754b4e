// Version of the worker <-> coordinator contract and of the tessera build.
#pragma once

namespace tessera {

// Bumped whenever the step protocol or checkpoint handling changes incompatibly; a worker whose
// version differs from the coordinator's is refused at registration.
inline constexpr int kProtocolVersion = 1;
const char* TesseraVersion();

}  // namespace tessera
