// grade: checks a sphinx server or client, in any language, and prints a report that is the same
// on every run, for a grading script to diff. `grade server` plays the clients (server_checks.cpp),
// `grade client` plays the server (client_checks.cpp). Exit status: 0 every check passed, 1 one
// failed, 2 grading could not run.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <system_error>
#include <thread>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"
#include "grade/grade.hpp"

Report::Report(std::map<std::string, unsigned> points) : points_(std::move(points)) {}

void Report::pass(std::string_view name, std::string_view expected) {
  const auto weight = points_.find(std::string(name));
  results_.push_back(
      {std::string(name), std::string(expected), "", weight == points_.end() ? 1 : weight->second});
  log_line("PASS " + std::string(name));
}

void Report::fail(std::string_view name, std::string_view expected, std::string_view came) {
  const auto weight = points_.find(std::string(name));
  results_.push_back({std::string(name), std::string(expected),
                      std::string(expected) + "; " + std::string(came),
                      weight == points_.end() ? 1 : weight->second});
  log_line("FAIL " + std::string(name) + ": " + results_.back().failure);
}

namespace {
std::string xml_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '&') {
      out += "&amp;";
    } else if (c == '<') {
      out += "&lt;";
    } else if (c == '"') {
      out += "&quot;";
    } else {
      out += c;  // the report's text is printable ASCII already (escape)
    }
  }
  return out;
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;  // the report's text is printable ASCII already (escape)
  }
  return out + "\"";
}
}  // namespace

int Report::finish(std::string_view suite, const GradeOptions& options) const {
  unsigned score = 0;
  unsigned max_score = 0;
  for (const Result& result : results_) {
    score += result.failure.empty() ? result.points : 0;
    max_score += result.points;
  }
  log_line("score " + std::to_string(score) + "/" + std::to_string(max_score));
  if (!options.junit.empty()) write_junit(suite, options.junit);
  if (!options.gradescope.empty()) write_gradescope(options.gradescope, "");
  return std::ranges::all_of(results_, [](const Result& r) { return r.failure.empty(); }) ? 0 : 1;
}

void Report::cannot_grade(const std::string& why, const std::string& gradescope_file) const {
  if (!gradescope_file.empty()) write_gradescope(gradescope_file, "grade could not run: " + why);
}

void Report::write_junit(std::string_view suite, const std::string& file) const {
  // One test case per check, no times: the file is as reproducible as the report. The points go
  // in properties, which JUnit readers show and ignore.
  std::size_t failures = 0;
  unsigned score = 0;
  unsigned max_score = 0;
  for (const Result& result : results_) {
    failures += result.failure.empty() ? 0 : 1;
    score += result.failure.empty() ? result.points : 0;
    max_score += result.points;
  }
  std::ofstream xml(file);
  xml << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<testsuite name=\"grade " << suite << "\" tests=\"" << results_.size() << "\" failures=\""
      << failures << "\">\n"
      << "  <properties>\n"
      << "    <property name=\"score\" value=\"" << score << "\"/>\n"
      << "    <property name=\"max_score\" value=\"" << max_score << "\"/>\n"
      << "  </properties>\n";
  for (const Result& result : results_) {
    xml << "  <testcase classname=\"grade." << suite << "\" name=\"" << xml_escape(result.name)
        << "\"";
    if (result.failure.empty()) {
      xml << "/>\n";
    } else {
      xml << ">\n    <failure message=\"" << xml_escape(result.failure) << "\"/>\n"
          << "  </testcase>\n";
    }
  }
  xml << "</testsuite>\n";
  if (!xml.flush()) throw CannotGrade("cannot write " + file);
}

void Report::write_gradescope(const std::string& file, const std::string& output) const {
  // Gradescope's results.json: a test per check with its points and why it passed or failed.
  unsigned score = 0;
  std::string tests;
  for (const Result& result : results_) {
    const bool passed = result.failure.empty();
    score += passed ? result.points : 0;
    tests += std::string(tests.empty() ? "" : ",\n") +
             "    {\"name\": " + json_string(result.name) +
             ", \"score\": " + std::to_string(passed ? result.points : 0) +
             ", \"max_score\": " + std::to_string(result.points) + ", \"status\": \"" +
             (passed ? "passed" : "failed") +
             "\", \"output\": " + json_string(passed ? result.expected : result.failure) + "}";
  }
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_);
  std::ofstream json(file);
  json << "{\n  \"score\": " << score << ",\n  \"execution_time\": " << seconds.count() << ",\n";
  if (!output.empty()) json << "  \"output\": " << json_string(output) << ",\n";
  json << "  \"tests\": [\n" << tests << (tests.empty() ? "" : "\n") << "  ]\n}\n";
  if (!json.flush()) throw CannotGrade("cannot write " + file);
}

bool out_of_time(const GradeOptions& options) {
  return std::chrono::steady_clock::now() >= options.limits.deadline;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "exit status " + std::to_string(WEXITSTATUS(status));
}

bool exited_zero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::vector<std::string> substitute(std::vector<std::string> command, std::string_view host,
                                    std::string_view port) {
  for (std::string& arg : command) {
    for (const auto& [from, to] : {std::pair{std::string_view("{host}"), host},
                                   std::pair{std::string_view("{port}"), port}}) {
      for (std::size_t at = 0; (at = arg.find(from, at)) != std::string::npos; at += to.size()) {
        arg.replace(at, from.size(), to);
      }
    }
  }
  return command;
}

Fd bind_loopback(std::string& port) {
  Fd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // port 0: the kernel chooses
  socklen_t length = sizeof address;
  if (!sock || bind(sock.get(), reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      getsockname(sock.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::system_error(errno, std::generic_category(), "cannot bind 127.0.0.1");
  }
  port = std::to_string(ntohs(address.sin_port));
  return sock;
}

void set_receive_timeout(int sock, std::chrono::milliseconds timeout) {
  const timeval limit{.tv_sec = timeout.count() / 1000, .tv_usec = timeout.count() % 1000 * 1000};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
}

std::string quote(std::string_view text) {
  std::string shown;
  std::size_t used = 0;
  while (used < text.size() && shown.size() < 80) shown += escape(text.substr(used++, 1));
  return "'" + shown + (used < text.size() ? "...'" : "'");
}

namespace {
constexpr std::string_view usage =
    "usage: grade server [OPTIONS] (HOST PORT | -- COMMAND ARGS...)\n"
    "       grade client [OPTIONS] -- COMMAND ARGS...\n"
    "In ARGS, {host} and {port} become the address grade chose.\n"
    "  server                grade a server; HOST PORT: one already running\n"
    "  client                grade a client\n"
    "  --pattern NAME        server: simple, threads, thread-per-client or async; check how many\n"
    "                        clients it serves at once\n"
    "  --threads N           server, --pattern threads: the pool's size (default 4)\n"
    "  --probe K             server, --pattern: silent clients to open at most (default 16)\n"
    "  --max-questions N     server: it closes after N replies; client, --cycle: close after N\n"
    "                        (default 10)\n"
    "  --seed N              server: its replies follow --seed N\n"
    "  --error               client: graded as client_questions -e\n"
    "  --cycle               client: graded as the lab's task (client_questions --cycle)\n"
    "  --delay SECONDS       client, --cycle: seconds it waits before each question (default 2)\n"
    "  --max-memory MIB      stop the program when its processes use more than MIB MiB together\n"
    "  --timeout SECONDS     the whole grading's time limit (default 120); later checks fail\n"
    "  --points CHECK=N,...  a check's points in the score (default 1 each)\n"
    "  --junit FILE          also write the results to FILE as JUnit XML\n"
    "  --gradescope FILE     also write the results to FILE as Gradescope's results.json\n"
    "  -h, --help            print this help and exit\n";

// What the options say together; throws UsageError where they contradict each other.
void check_together(GradeOptions& options, bool has_command, unsigned threads, unsigned probe,
                    std::optional<double> delay) {
  const bool server = options.mode == "server";
  if (server && has_command && !options.host.empty()) {
    throw UsageError("give HOST PORT or -- COMMAND ARGS..., not both");
  }
  if (server && !has_command && options.port.empty()) {
    throw UsageError(options.host.empty() ? "missing HOST PORT or -- COMMAND ARGS..."
                                          : "missing PORT");
  }
  if (!server && !options.host.empty()) {
    throw UsageError("client takes -- COMMAND ARGS..., not HOST PORT");
  }
  if (has_command && options.command.empty()) throw UsageError("missing COMMAND after --");
  if (!server && !has_command) throw UsageError("missing -- COMMAND ARGS...");
  if (!server && (!options.pattern.empty() || options.seed)) {
    throw UsageError("--pattern and --seed are for grading a server");
  }
  if (server && (options.error || options.cycle || delay)) {
    throw UsageError("--error, --cycle and --delay are for grading a client");
  }
  if (threads != 0 && options.pattern != "threads") {
    throw UsageError("--threads goes with --pattern threads");
  }
  if (probe != 0 && options.pattern.empty()) throw UsageError("--probe goes with --pattern");
  if (options.error && options.cycle) throw UsageError("--error and --cycle exclude each other");
  if (delay && !options.cycle) throw UsageError("--delay goes with --cycle");
  if (!server && options.max_questions && !options.cycle) {
    throw UsageError("--max-questions goes with --cycle when grading a client");
  }
  options.threads = threads != 0 ? threads : 4;
  options.probe = probe != 0 ? probe : 16;
  if (options.pattern == "threads" && options.probe <= options.threads) {
    throw UsageError("--probe must be more than --threads, to see the pool full");
  }
  if (options.cycle && !options.max_questions) options.max_questions = 10;
  if (options.cycle && options.max_questions == 0U) {
    throw UsageError("--max-questions must be at least 1 when grading a client");
  }
  options.delay = delay.value_or(2);
}

// --points CHECK=N,CHECK=N: each check named as grade names it.
void read_points(std::string_view list, std::map<std::string, unsigned>& points) {
  while (!list.empty()) {
    const std::string_view item = list.substr(0, list.find(','));
    list.remove_prefix(std::min(list.size(), item.size() + 1));
    const std::size_t equals = item.find('=');
    const std::string name(item.substr(0, equals));
    if (equals == std::string_view::npos ||
        std::ranges::find(check_names, name) == check_names.end()) {
      throw UsageError("--points takes CHECK=N,..., with a check grade has, not '" + escape(item) +
                       "'");
    }
    points[name] = parse_uint(std::string(item.substr(equals + 1)), "--points", 0, 1000);
  }
}

// The command line: grade's own options, then "--" and the command to grade, which keeps its
// options to itself.
std::optional<GradeOptions> read_options(int argc, char* argv[]) {
  GradeOptions options;
  int own = 1;
  while (own < argc && std::strcmp(argv[own], "--") != 0) ++own;
  for (int i = own + 1; i < argc; ++i) options.command.emplace_back(argv[i]);

  unsigned threads = 0;  // 0: not given
  unsigned probe = 0;
  std::optional<double> delay;
  double timeout = 120;
  const std::array<option, 13> long_options = {{{"pattern", required_argument, nullptr, 'p'},
                                                {"threads", required_argument, nullptr, 't'},
                                                {"probe", required_argument, nullptr, 'k'},
                                                {"max-questions", required_argument, nullptr, 'm'},
                                                {"seed", required_argument, nullptr, 's'},
                                                {"error", no_argument, nullptr, 'e'},
                                                {"cycle", no_argument, nullptr, 'c'},
                                                {"delay", required_argument, nullptr, 'd'},
                                                {"junit", required_argument, nullptr, 'j'},
                                                {"gradescope", required_argument, nullptr, 'g'},
                                                {"points", required_argument, nullptr, 'P'},
                                                {"max-memory", required_argument, nullptr, 'M'},
                                                {"timeout", required_argument, nullptr, 'T'}}};
  const auto arguments =
      parse_command_line(own, argv, "", long_options, [&](int val, const char* value) {
        if (val == 'p') {
          options.pattern = value;
          if (options.pattern != "simple" && options.pattern != "threads" &&
              options.pattern != "thread-per-client" && options.pattern != "async") {
            throw UsageError(
                "--pattern must be simple, threads, thread-per-client or async, not '" +
                escape(value) + "'");
          }
        }
        if (val == 't') threads = parse_uint(value, "--threads", 1, max_threads);
        if (val == 'k') probe = parse_uint(value, "--probe", 2);
        if (val == 'm') options.max_questions = parse_uint(value, "--max-questions");
        if (val == 's') options.seed = parse_uint(value, "--seed");
        if (val == 'e') options.error = true;
        if (val == 'c') options.cycle = true;
        if (val == 'd') delay = parse_seconds(value, "--delay");
        if (val == 'j') options.junit = value;
        if (val == 'g') options.gradescope = value;
        if (val == 'P') read_points(value, options.points);
        if (val == 'M') options.limits.max_memory_mib = parse_uint(value, "--max-memory", 1);
        if (val == 'T') timeout = parse_seconds(value, "--timeout");
      });
  if (!arguments) return std::nullopt;
  check_arguments(*arguments, {"MODE", "HOST", "PORT"}, 1);
  options.mode = (*arguments)[0];
  if (options.mode != "server" && options.mode != "client") {
    throw UsageError("MODE must be server or client, not '" + escape(options.mode) + "'");
  }
  if (arguments->size() > 1) options.host = (*arguments)[1];
  if (arguments->size() > 2) options.port = (*arguments)[2];
  if (!options.port.empty()) parse_uint(options.port, "PORT", 0, 65535);
  check_together(options, own < argc, threads, probe, delay);
  options.limits.deadline = std::chrono::steady_clock::now() +
                            std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(timeout));
  return options;
}
}  // namespace

int main(int argc, char* argv[]) {
  const GradeOptions options =
      options_or_exit("grade", usage, [&] { return read_options(argc, argv); });
  std::signal(SIGPIPE, SIG_IGN);  // a program under test that goes away is a finding, not a crash
  Report report(options.points);
  try {
    contain_programs();
    if (options.mode == "server") {
      grade_server(options, report);
    } else {
      grade_client(options, report);
    }
    return report.finish(options.mode, options);
  } catch (const std::exception& error) {
    kill_descendants();  // the program's destructor did, unless grade failed outside it
    log_error(error.what());
    try {
      report.cannot_grade(error.what(), options.gradescope);
    } catch (const std::exception& also) {
      log_error(also.what());
    }
    return 2;
  }
}
