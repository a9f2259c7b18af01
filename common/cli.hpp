#pragma once

#include <getopt.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.hpp"

// A malformed command line: the programs print the reason and the usage, and exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whole numbers and seconds as the options take them; UsageError names the option (and ends
// with `why`, if given).
std::uint32_t parse_uint(std::string_view text, std::string_view what, std::uint32_t min = 0,
                         std::uint32_t max = UINT32_MAX, std::string_view why = {});
double parse_seconds(std::string_view text, std::string_view what);

// getopt_long over argv, with -h/--help added: on_option(val, optarg) for each option found,
// as "--name VALUE" or "--name=VALUE". Returns the positional arguments in order, wherever they
// stood, or nullopt after --help. Throws UsageError with a one-line reason.
using OptionHandler = std::function<void(int val, const char* value)>;
std::optional<std::vector<std::string>> parse_command_line(int argc, char* argv[],
                                                           const std::string& short_options,
                                                           std::span<const option> long_options,
                                                           const OptionHandler& on_option);

// Throws unless `given` holds at least `required` and at most names.size() arguments.
void check_arguments(const std::vector<std::string>& given,
                     std::initializer_list<std::string_view> names, std::size_t required);

// What main calls with its parser: the options; after --help the usage on stdout and exit 0;
// after a UsageError "PROGRAM: REASON" and the usage on stderr, and exit 2.
template <class Parse>
auto options_or_exit(std::string_view program, std::string_view usage, const Parse& parse) {
  set_program_name(program);
  try {
    if (auto options = parse()) return *options;
    std::fwrite(usage.data(), 1, usage.size(), stdout);
    std::exit(0);
  } catch (const UsageError& error) {
    log_error(error.what());
    std::fwrite(usage.data(), 1, usage.size(), stderr);
    std::exit(2);
  }
}

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

// Options a server adds in its own main.cpp: getopt_long entries (val 256 and up), their words
// in the usage, and what to do with each one found.
struct ExtraOptions {
  std::vector<option> options;
  std::string synopsis;  // e.g. " [--idle-timeout SECONDS]"
  std::string help;      // e.g. "  --idle-timeout SECONDS  close a client idle that long\n"
  OptionHandler set;
};

// A server's command line over `defaults`: the server has --threads only where
// defaults.threads > 0. nullopt after --help; throws UsageError.
std::optional<ServerOptions> read_server_options(int argc, char* argv[], ServerOptions defaults,
                                                 const ExtraOptions& extra = {});
std::string server_usage(std::string_view program, const ServerOptions& defaults,
                         const ExtraOptions& extra = {});

// What a server's main calls: the options, or exit 0 (--help) or 2 (usage error).
ServerOptions parse_server_options(int argc, char* argv[], std::string_view program,
                                   const ServerOptions& defaults, const ExtraOptions& extra = {});
