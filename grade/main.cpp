// grade: checks a sphinx server or client, in any language, and prints a report that is the same
// on every run, for a grading script to diff. `grade server` plays the clients (server_checks.cpp),
// `grade client` plays the server (client_checks.cpp). Exit status: 0 every check passed, 1 one
// failed, 2 grading could not run.
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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

extern char** environ;

void Report::pass(std::string_view name) {
  results_.push_back({std::string(name), ""});
  log_line("PASS " + std::string(name));
}

void Report::fail(std::string_view name, std::string_view expected, std::string_view came) {
  results_.push_back({std::string(name), std::string(expected) + "; " + std::string(came)});
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
}  // namespace

int Report::finish(std::string_view suite, const std::string& junit_file) const {
  std::size_t passed = 0;
  for (const Result& result : results_) passed += result.failure.empty() ? 1 : 0;
  log_line("score " + std::to_string(passed) + "/" + std::to_string(results_.size()));
  if (!junit_file.empty()) {
    // One test case per check, no times: the file is as reproducible as the report.
    std::ofstream xml(junit_file);
    xml << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        << "<testsuite name=\"grade " << suite << "\" tests=\"" << results_.size()
        << "\" failures=\"" << results_.size() - passed << "\">\n";
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
    if (!xml.flush()) throw CannotGrade("cannot write " + junit_file);
  }
  return passed == results_.size() ? 0 : 1;
}

Process::Process(const std::vector<std::string>& argv, int stdout_fd) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, STDOUT_FILENO);
  // posix_spawnp searches PATH like a shell, and reports a program that cannot run (ENOENT,
  // EACCES) as its result, not as an exit status of 127 that could be the program's own.
  const int error = posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    throw CannotGrade("cannot start " + quote(argv[0]) + ": " + std::strerror(error));
  }
}

Process::~Process() {
  if (!status_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!status_) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = status;
    } else if (std::chrono::steady_clock::now() >= deadline) {
      break;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a bounded wait for an exit
    }
  }
  return status_;
}

void Process::signal(int number) const {
  if (!status_) kill(pid_, number);
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
    "  --pattern NAME        server: simple, threads or async; check how many clients it serves\n"
    "                        at once\n"
    "  --threads N           server, --pattern threads: the pool's size (default 4)\n"
    "  --probe K             server, --pattern: silent clients to open at most (default 16)\n"
    "  --max-questions N     server: it closes after N replies; client, --cycle: close after N\n"
    "                        (default 10)\n"
    "  --seed N              server: its replies follow --seed N\n"
    "  --error               client: graded as client_questions -e\n"
    "  --cycle               client: graded as the lab's task (client_questions --cycle)\n"
    "  --delay SECONDS       client, --cycle: seconds it waits before each question (default 2)\n"
    "  --junit FILE          also write the results to FILE as JUnit XML\n"
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
  const std::array<option, 9> long_options = {{{"pattern", required_argument, nullptr, 'p'},
                                               {"threads", required_argument, nullptr, 't'},
                                               {"probe", required_argument, nullptr, 'k'},
                                               {"max-questions", required_argument, nullptr, 'm'},
                                               {"seed", required_argument, nullptr, 's'},
                                               {"error", no_argument, nullptr, 'e'},
                                               {"cycle", no_argument, nullptr, 'c'},
                                               {"delay", required_argument, nullptr, 'd'},
                                               {"junit", required_argument, nullptr, 'j'}}};
  const auto arguments =
      parse_command_line(own, argv, "", long_options, [&](int val, const char* value) {
        if (val == 'p') {
          options.pattern = value;
          if (options.pattern != "simple" && options.pattern != "threads" &&
              options.pattern != "async") {
            throw UsageError("--pattern must be simple, threads or async, not '" + escape(value) +
                             "'");
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
  return options;
}
}  // namespace

int main(int argc, char* argv[]) try {
  const GradeOptions options =
      options_or_exit("grade", usage, [&] { return read_options(argc, argv); });
  std::signal(SIGPIPE, SIG_IGN);  // a program under test that goes away is a finding, not a crash
  Report report;
  if (options.mode == "server") {
    grade_server(options, report);
  } else {
    grade_client(options, report);
  }
  return report.finish(options.mode, options.junit);
} catch (const std::exception& error) {
  log_error(error.what());
  return 2;
}
