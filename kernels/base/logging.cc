#include "kernels/base/logging.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace tessera {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::atoi(value);
}

std::atomic<int>& MinSeverityStorage() {
  static std::atomic<int> severity{EnvInt("TESSERA_LOG_LEVEL", 0)};
  return severity;
}

const char* SeverityLetter(LogSeverity severity) {
  switch (severity) {
    case LogSeverity::kInfo: return "I";
    case LogSeverity::kWarning: return "W";
    case LogSeverity::kError: return "E";
    case LogSeverity::kFatal: return "F";
  }
  return "?";
}

}  // namespace

void SetMinLogSeverity(LogSeverity severity) {
  MinSeverityStorage().store(static_cast<int>(severity));
}
LogSeverity MinLogSeverity() { return static_cast<LogSeverity>(MinSeverityStorage().load()); }
int VerboseLevel() {
  static const int level = EnvInt("TESSERA_VLOG", 0);
  return level;
}

LogMessage::LogMessage(const char* file, int line, LogSeverity severity) : severity_(severity) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  std::tm tm_buf;
  localtime_r(&seconds, &tm_buf);
  char time_str[32];
  std::strftime(time_str, sizeof(time_str), "%m%d %H:%M:%S", &tm_buf);
  const char* base = std::strrchr(file, '/');
  stream_ << SeverityLetter(severity) << time_str << "." << micros << " "
          << (base ? base + 1 : file) << ":" << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string text = stream_.str();
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (severity_ == LogSeverity::kFatal) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace tessera
