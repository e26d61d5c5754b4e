// Minimal leveled logging and CHECK macros.
//
// LOG(INFO|WARNING|ERROR|FATAL) << ...; writes one line to stderr with a timestamp and source
// location; FATAL aborts. CHECK(cond), CHECK_EQ/NE/LT/LE/GT/GE abort with a message when a broken
// invariant is found (never for bad input: that is a Status). VLOG(n) prints when the
// TESSERA_VLOG environment variable is >= n. Thread safe: each line is written with one call.
#pragma once

#include <sstream>
#include <string>

namespace tessera {

enum class LogSeverity { kInfo = 0, kWarning = 1, kError = 2, kFatal = 3 };

// Lines below this severity are dropped (default kInfo; TESSERA_LOG_LEVEL=0..3 overrides).
void SetMinLogSeverity(LogSeverity severity);
LogSeverity MinLogSeverity();
int VerboseLevel();

class LogMessage {
 public:
  LogMessage(const char* file, int line, LogSeverity severity);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

// Swallows the stream when the line is disabled.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace tessera

#define TESSERA_LOG_SEVERITY_INFO ::tessera::LogSeverity::kInfo
#define TESSERA_LOG_SEVERITY_WARNING ::tessera::LogSeverity::kWarning
#define TESSERA_LOG_SEVERITY_ERROR ::tessera::LogSeverity::kError
#define TESSERA_LOG_SEVERITY_FATAL ::tessera::LogSeverity::kFatal

#ifndef LOG
#define LOG(severity)                                                       \
  !(TESSERA_LOG_SEVERITY_##severity >= ::tessera::MinLogSeverity())         \
      ? (void)0                                                             \
      : ::tessera::LogVoidify() &                                           \
            ::tessera::LogMessage(__FILE__, __LINE__, TESSERA_LOG_SEVERITY_##severity).stream()
#endif

#ifndef VLOG
#define VLOG(level)                                                               \
  !((level) <= ::tessera::VerboseLevel())                                         \
      ? (void)0                                                                   \
      : ::tessera::LogVoidify() &                                                 \
            ::tessera::LogMessage(__FILE__, __LINE__, ::tessera::LogSeverity::kInfo).stream()
#endif

#ifndef CHECK
#define CHECK(cond)                                                                      \
  (cond) ? (void)0                                                                       \
         : ::tessera::LogVoidify() &                                                     \
               ::tessera::LogMessage(__FILE__, __LINE__, ::tessera::LogSeverity::kFatal) \
                       .stream()                                                         \
                   << "Check failed: " #cond " "
#define TESSERA_CHECK_OP(a, b, op) \
  CHECK((a)op(b)) << "(" << (a) << " vs. " << (b) << ") "
#define CHECK_EQ(a, b) TESSERA_CHECK_OP(a, b, ==)
#define CHECK_NE(a, b) TESSERA_CHECK_OP(a, b, !=)
#define CHECK_LT(a, b) TESSERA_CHECK_OP(a, b, <)
#define CHECK_LE(a, b) TESSERA_CHECK_OP(a, b, <=)
#define CHECK_GT(a, b) TESSERA_CHECK_OP(a, b, >)
#define CHECK_GE(a, b) TESSERA_CHECK_OP(a, b, >=)
#define CHECK_OK(expr)                                       \
  do {                                                       \
    ::absl::Status tessera_check_status_ = (expr);           \
    CHECK(tessera_check_status_.ok()) << tessera_check_status_; \
  } while (0)
#endif

#ifndef NDEBUG
#define DCHECK(cond) CHECK(cond)
#else
#define DCHECK(cond) \
  while (false) CHECK(cond)
#endif
