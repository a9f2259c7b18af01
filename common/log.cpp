#include "common/log.hpp"

#include <cstdio>
#include <mutex>

namespace {
std::string program = "sphinx";
std::mutex output_mutex;

void write_line(std::FILE* stream, std::string_view line) {
  const std::scoped_lock lock(output_mutex);
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
}
}  // namespace

void set_program_name(std::string_view name) { program = name; }
std::string_view program_name() { return program; }

void log_line(std::string_view line) { write_line(stdout, line); }

void log_error(std::string_view message) {
  write_line(stderr, program + ": " + std::string(message));
}

int fail(const std::exception& error) {
  log_error(error.what());
  return 1;
}

std::string escape(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += {'\\', 'x', hex[byte >> 4], hex[byte & 0xf]};
    }
  }
  return out;
}
