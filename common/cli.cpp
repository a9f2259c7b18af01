#include "common/cli.hpp"

#include <charconv>

#include "common/protocol.hpp"

namespace {
std::string quoted(std::string_view text) { return "'" + escape(text) + "'"; }
}  // namespace

std::uint32_t parse_uint(std::string_view text, std::string_view what, std::uint32_t min,
                         std::uint32_t max, std::string_view why) {
  std::uint32_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
    throw UsageError(std::string(what) + " must be a whole number from " + std::to_string(min) +
                     " to " + std::to_string(max) + ", not " + quoted(text) +
                     (why.empty() ? "" : " (" + std::string(why) + ")"));
  }
  return value;
}

double parse_seconds(std::string_view text, std::string_view what) {
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  // At most a day: a longer wait is surely a typo, and it keeps every timeout within an int.
  if (error != std::errc{} || end != text.data() + text.size() || !(value >= 0 && value <= 86400)) {
    throw UsageError(std::string(what) + " must be a number of seconds from 0 to 86400, not " +
                     quoted(text));
  }
  return value;
}

std::optional<std::vector<std::string>> parse_command_line(int argc, char* argv[],
                                                           const std::string& short_options,
                                                           std::span<const option> long_options,
                                                           const OptionHandler& on_option) {
  // "-": positional arguments come back in order, as 1; ":": a missing value comes back as ':'.
  const std::string shorts = "-:h" + short_options;
  std::vector<option> longs(long_options.begin(), long_options.end());
  longs.push_back({"help", no_argument, nullptr, 'h'});
  longs.push_back({});
  std::vector<std::string> positionals;
  opterr = 0;
  optind = 0;  // glibc starts afresh, so a test can parse one command line after another
  while (true) {
    const std::string_view arg = argv[std::min(std::max(optind, 1), argc - 1)];
    const int val = getopt_long(argc, argv, shorts.c_str(), longs.data(), nullptr);
    if (val == -1) break;
    const std::string name = arg.starts_with("--") ? std::string(arg.substr(0, arg.find('=')))
                                                   : std::string{'-', static_cast<char>(optopt)};
    if (val == 1) {
      positionals.emplace_back(optarg);
    } else if (val == 'h') {
      return std::nullopt;
    } else if (val == ':') {
      throw UsageError(name + " needs a value");
    } else if (val == '?') {
      throw UsageError(optopt != 0 && arg.starts_with("--") ? name + " takes no value"
                                                            : "unknown option " + quoted(name));
    } else {
      on_option(val, optarg);
    }
  }
  positionals.insert(positionals.end(), argv + optind, argv + argc);  // those after "--"
  return positionals;
}

void check_arguments(const std::vector<std::string>& given,
                     std::initializer_list<std::string_view> names, std::size_t required) {
  if (given.size() < required)
    throw UsageError("missing " + std::string(names.begin()[given.size()]));
  if (given.size() > names.size())
    throw UsageError("unexpected argument " + quoted(given[names.size()]));
}

std::optional<ServerOptions> read_server_options(int argc, char* argv[], ServerOptions defaults,
                                                 const ExtraOptions& extra) {
  ServerOptions& options = defaults;
  std::vector<option> longs = {{"seed", required_argument, nullptr, 's'},
                               {"max-questions", required_argument, nullptr, 'm'}};
  if (options.threads > 0) longs.push_back({"threads", required_argument, nullptr, 't'});
  longs.insert(longs.end(), extra.options.begin(), extra.options.end());
  const auto positionals =
      parse_command_line(argc, argv, "", longs, [&](int val, const char* value) {
        if (val == 's') {
          options.seed = parse_uint(value, "--seed");
        } else if (val == 'm') {
          options.max_questions = parse_uint(value, "--max-questions");
        } else if (val == 't') {
          // A bound well above the 10,000 threads the bench runs: a typo is a usage error, not
          // an attempt at billions of threads that ends in std::bad_alloc.
          options.threads = parse_uint(value, "--threads", 1, max_threads,
                                       "each thread is a kernel task with its own stack: 100000 "
                                       "is already past the limits of most systems");
        } else {
          extra.set(val, value);
        }
      });
  if (!positionals) return std::nullopt;
  check_arguments(*positionals, {"HOST", "PORT"}, 0);
  if (!positionals->empty()) options.host = (*positionals)[0];
  if (positionals->size() > 1) options.port = (*positionals)[1];
  parse_uint(options.port, "PORT", 0, 65535);
  return options;
}

std::string server_usage(std::string_view program, const ServerOptions& defaults,
                         const ExtraOptions& extra) {
  const bool threads = defaults.threads > 0;
  return "usage: " + std::string(program) + " [HOST [PORT]] [--seed N] [--max-questions N]" +
         (threads ? " [--threads N]" : "") + extra.synopsis +
         "\n"
         "  HOST                  address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
         "  PORT                  port to listen on (default 1234; 0 lets the kernel choose)\n"
         "  --seed N              make replies reproducible: the same seed, the same replies\n"
         "  --max-questions N     close a connection after N replies (0: no limit; default " +
         std::to_string(defaults.max_questions) + ")\n" +
         (threads ? "  --threads N           size of the thread pool (default 4, at most 100000)\n"
                  : "") +
         extra.help + "  -h, --help            print this help and exit\n";
}

ServerOptions parse_server_options(int argc, char* argv[], std::string_view program,
                                   const ServerOptions& defaults, const ExtraOptions& extra) {
  return options_or_exit(program, server_usage(program, defaults, extra),
                         [&] { return read_server_options(argc, argv, defaults, extra); });
}
