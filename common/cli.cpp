#include "common/cli.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "common/log.hpp"

namespace {
std::string quoted(std::string_view text) { return "'" + escape(text) + "'"; }
}  // namespace

std::uint32_t parse_uint(std::string_view text, std::string_view what, std::uint32_t min,
                         std::uint32_t max) {
  std::uint32_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
    throw UsageError(std::string(what) + " must be a whole number from " + std::to_string(min) +
                     " to " + std::to_string(max) + ", not " + quoted(text));
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

ArgParser::ArgParser(std::string_view program, std::string_view synopsis)
    : program_(program), synopsis_(synopsis) {
  set_program_name(program);
}

void ArgParser::positional(std::string_view name, std::string_view help, std::string& value,
                           bool required) {
  positionals_.push_back({std::string(name), std::string(name), std::string(help),
                          [&value](std::string_view text) { value = text; }});
  if (required) required_ = positionals_.size();
}

void ArgParser::choice(std::string_view name, std::string_view help, std::string& value,
                       std::vector<std::string> choices) {
  positional(name, help, value, true);
  positionals_.back().set = [&value, choices = std::move(choices),
                             what = std::string(name)](std::string_view text) {
    if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
      std::string allowed;
      for (std::size_t i = 0; i < choices.size(); ++i) {
        allowed += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
      }
      throw UsageError(what + " must be " + allowed + ", not " + quoted(text));
    }
    value = text;
  };
}

void ArgParser::port(std::string_view help, std::string& value, bool required) {
  positional("PORT", help, value, required);
  positionals_.back().set = [&value](std::string_view text) {
    parse_uint(text, "PORT", 0, 65535);
    value = text;
  };
}

void ArgParser::flag(std::string_view name, std::string_view help, bool& value) {
  options_.push_back(
      {std::string(name), "", std::string(help), [&value](std::string_view) { value = true; }});
}

void ArgParser::option(std::string_view name, std::string_view help, unsigned& value, unsigned min,
                       unsigned max, std::string_view why) {
  options_.push_back(
      {std::string(name), "N", std::string(help),
       [&value, min, max, what = std::string(name), why = std::string(why)](std::string_view text) {
         try {
           value = parse_uint(text, what, min, max);
         } catch (const UsageError& error) {
           if (why.empty()) throw;
           throw UsageError(std::string(error.what()) + " (" + why + ")");
         }
       }});
}

void ArgParser::option(std::string_view name, std::string_view help,
                       std::optional<std::uint32_t>& value) {
  options_.push_back({std::string(name), "N", std::string(help),
                      [&value, what = std::string(name)](std::string_view text) {
                        value = parse_uint(text, what);
                      }});
}

void ArgParser::option(std::string_view name, std::string_view help, double& seconds) {
  options_.push_back({std::string(name), "SECONDS", std::string(help),
                      [&seconds, what = std::string(name)](std::string_view text) {
                        seconds = parse_seconds(text, what);
                      }});
}

void ArgParser::option(std::string_view name, std::string_view help,
                       std::optional<double>& seconds) {
  options_.push_back({std::string(name), "SECONDS", std::string(help),
                      [&seconds, what = std::string(name)](std::string_view text) {
                        seconds = parse_seconds(text, what);
                      }});
}

bool ArgParser::parse(const std::vector<std::string_view>& args) {
  std::size_t given = 0;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "-h" || arg == "--help") return false;
    if (arg.size() > 1 && arg[0] == '-') {
      const std::size_t equals = arg.find('=');
      const std::string_view name = arg.substr(0, equals);
      const Item* item = nullptr;
      for (const Item& candidate : options_) {
        if (candidate.name == name) item = &candidate;
      }
      if (item == nullptr) throw UsageError("unknown option " + quoted(name));
      if (item->metavar.empty()) {
        if (equals != std::string_view::npos) throw UsageError(item->name + " takes no value");
        item->set({});
      } else if (equals != std::string_view::npos) {
        item->set(arg.substr(equals + 1));
      } else if (i + 1 < args.size()) {
        item->set(args[++i]);
      } else {
        throw UsageError(item->name + " needs a value");
      }
    } else if (given < positionals_.size()) {
      positionals_[given++].set(arg);
    } else {
      throw UsageError("unexpected argument " + quoted(arg));
    }
  }
  if (given < required_) throw UsageError("missing " + positionals_[given].name);
  return true;
}

void ArgParser::parse_or_exit(int argc, char* argv[]) {
  try {
    if (parse(std::vector<std::string_view>(argv + 1, argv + argc))) return;
    std::fputs(usage().c_str(), stdout);
    std::exit(0);
  } catch (const UsageError& error) {
    exit_usage_error(error.what());
  }
}

void ArgParser::exit_usage_error(std::string_view reason) const {
  std::fprintf(stderr, "%s: %.*s\n%s", program_.c_str(), static_cast<int>(reason.size()),
               reason.data(), usage().c_str());
  std::exit(2);
}

std::string ArgParser::usage() const {
  std::string text = "usage: " + program_ + " " + synopsis_ + "\n";
  for (const auto* items : {&positionals_, &options_}) {
    for (const Item& item : *items) {
      std::string name =
          items == &options_ && !item.metavar.empty() ? item.name + " " + item.metavar : item.name;
      name.resize(std::max<std::size_t>(name.size() + 2, 22), ' ');
      text += "  " + name + item.help + "\n";
    }
  }
  return text + "  -h, --help            print this help and exit\n";
}

ArgParser server_arguments(std::string_view program, ServerOptions& options) {
  const bool has_threads = options.threads > 0;
  ArgParser args(program, has_threads ? "[HOST [PORT]] [--seed N] [--max-questions N] [--threads N]"
                                      : "[HOST [PORT]] [--seed N] [--max-questions N]");
  args.positional("HOST", "address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)",
                  options.host);
  args.port("port to listen on (default 1234; 0 lets the kernel choose)", options.port);
  args.option("--seed", "make replies reproducible: the same seed, the same replies", options.seed);
  args.option("--max-questions",
              "close a connection after N replies (0: no limit; default " +
                  std::to_string(options.max_questions) + ")",
              options.max_questions);
  if (has_threads) {
    // A bound well above the 10,000 threads the bench runs, so that a typo is a usage error and
    // not an attempt at billions of threads that ends in std::bad_alloc.
    args.option("--threads", "size of the thread pool (default 4, at most 100000)", options.threads,
                1, max_threads,
                "each thread is a kernel task with its own stack: 100000 is already past the "
                "limits of most systems");
  }
  return args;
}

ServerOptions parse_server_options(int argc, char* argv[], std::string_view program,
                                   const ServerOptions& defaults) {
  ServerOptions options = defaults;
  server_arguments(program, options).parse_or_exit(argc, argv);
  return options;
}
