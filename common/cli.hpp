#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// A malformed command line: the programs print the reason and the usage, and exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The command-line parser every program shares: positional arguments, flags and options, in any
// order, as "--name VALUE" or "--name=VALUE"; -h/--help prints the usage and exits 0.
class ArgParser {
 public:
  ArgParser(std::string_view program, std::string_view synopsis);

  void positional(std::string_view name, std::string_view help, std::string& value,
                  bool required = false);
  // A required positional that must be one of `choices`.
  void choice(std::string_view name, std::string_view help, std::string& value,
              std::vector<std::string> choices);
  // The positional PORT: a number from 0 to 65535.
  void port(std::string_view help, std::string& value, bool required = false);
  void flag(std::string_view name, std::string_view help, bool& value);
  // `why`, if given, ends the message of a value outside min..max.
  void option(std::string_view name, std::string_view help, unsigned& value, unsigned min = 0,
              unsigned max = UINT32_MAX, std::string_view why = {});
  void option(std::string_view name, std::string_view help, std::optional<std::uint32_t>& value);
  void option(std::string_view name, std::string_view help, double& seconds);
  // Seconds that stay nullopt unless given (for an option that only goes with another).
  void option(std::string_view name, std::string_view help, std::optional<double>& seconds);

  // Throws UsageError; returns false after --help (the caller prints usage()).
  bool parse(const std::vector<std::string_view>& args);
  // What main calls: on --help prints the usage to stdout and exits 0; on a usage error prints
  // "PROGRAM: REASON" and the usage to stderr and exits 2.
  void parse_or_exit(int argc, char* argv[]);
  // What parse_or_exit does on a usage error, for one found after parsing (two options that
  // do not go together): "PROGRAM: REASON" and the usage on stderr, exit 2.
  [[noreturn]] void exit_usage_error(std::string_view reason) const;

  [[nodiscard]] std::string usage() const;

 private:
  struct Item {
    std::string name;
    std::string metavar;  // empty for a flag
    std::string help;
    std::function<void(std::string_view)> set;
  };
  std::string program_;
  std::string synopsis_;
  std::vector<Item> positionals_;
  std::vector<Item> options_;
  std::size_t required_ = 0;
};

// Whole numbers and seconds as the options take them; UsageError names the option.
std::uint32_t parse_uint(std::string_view text, std::string_view what, std::uint32_t min = 0,
                         std::uint32_t max = UINT32_MAX);
double parse_seconds(std::string_view text, std::string_view what);

// The largest --threads server_threads accepts.
inline constexpr unsigned max_threads = 100000;

// The three servers' command line (docs/PROTOCOL.md).
struct ServerOptions {
  std::string host = "127.0.0.1";
  std::string port = "1234";
  std::optional<std::uint32_t> seed{};
  unsigned max_questions = 0;  // 0: no limit
  unsigned threads = 0;        // server_threads only: the pool size
};

// The parser of a server's command line, filling `options`, which holds the defaults on entry:
// the server has --threads only where options.threads > 0.
ArgParser server_arguments(std::string_view program, ServerOptions& options);

// What a server's main calls: the options, or exit 0 (--help) or 2 (usage error).
ServerOptions parse_server_options(int argc, char* argv[], std::string_view program,
                                   const ServerOptions& defaults);
