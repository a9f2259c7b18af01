// libFuzzer target for the command-line parser: any argument list (the input split at NUL
// bytes) either parses into options that are in range, or is refused with a UsageError. No
// other exception, no crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/cli.hpp"

namespace {
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> words = {"server_threads"};
  for (std::size_t start = 0; start <= input.size();) {
    const std::size_t end = std::min(input.find('\0', start), input.size());
    words.push_back(input.substr(start, end - start));
    start = end + 1;
  }
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  const int argc = static_cast<int>(words.size());

  try {
    if (const auto options = read_server_options(argc, argv.data(), {.threads = 4})) {
      check(parse_uint(options->port, "PORT", 0, 65535) <= 65535);
      check(options->threads >= 1 && options->threads <= max_threads);
    }
  } catch (const UsageError&) {
  }

  // A program's own options, as client_questions and async_sync declare them.
  double delay = 2;
  unsigned clients = 2;
  const std::vector<option> long_options = {{"delay", required_argument, nullptr, 'd'},
                                            {"clients", required_argument, nullptr, 'c'}};
  try {
    const auto positionals =
        parse_command_line(argc, argv.data(), "e", long_options, [&](int val, const char* value) {
          check(val == 'd' || val == 'c' || val == 'e');
          if (val == 'd') delay = parse_seconds(value, "--delay");
          if (val == 'c') clients = parse_uint(value, "--clients", 1);
        });
    if (positionals) check_arguments(*positionals, {"MODE"}, 1);
    check(delay >= 0 && clients >= 1);
  } catch (const UsageError&) {
  }
  return 0;
}
