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
  std::vector<std::string_view> args;
  for (std::size_t start = 0; start <= input.size();) {
    const std::size_t end = std::min(input.find('\0', start), input.size());
    args.emplace_back(input.data() + start, end - start);
    start = end + 1;
  }
  ServerOptions options{.threads = 4};
  try {
    if (server_arguments("server_threads", options).parse(args)) {
      check(parse_uint(options.port, "PORT", 0, 65535) <= 65535);
      check(options.threads >= 1 && options.threads <= max_threads);
    }
  } catch (const UsageError&) {
  }

  double delay = 2;
  unsigned clients = 2;
  std::string mode;
  ArgParser parser("async_sync", "");
  parser.choice("MODE", "", mode, {"sync", "async"});
  parser.option("--delay", "", delay);
  parser.option("--clients", "", clients, 1);
  try {
    if (parser.parse(args))
      check((mode == "sync" || mode == "async") && delay >= 0 && clients >= 1);
  } catch (const UsageError&) {
  }
  return 0;
}
