#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.hpp"
#include "grade/process.hpp"

// What grade's three files share: the command line, the report, and the programs grade starts.

struct GradeOptions {
  std::string mode;                  // server or client
  std::string host;                  // server mode: a server already running at HOST PORT
  std::string port;                  //
  std::vector<std::string> command;  // or the COMMAND ARGS... after "--"
  std::string pattern;               // server: simple, threads, thread-per-client, async or none
  unsigned threads = 4;              // server, pattern threads: the pool's size
  unsigned probe = 16;               // server: silent clients at most, in concurrency
  std::optional<std::uint32_t> max_questions;
  std::optional<std::uint32_t> seed;       // server: the replies must follow this seed
  bool error = false;                      // client: graded as client_questions -e
  bool cycle = false;                      // client: graded as the lab's task
  double delay = 2;                        // client, with --cycle: seconds before each question
  std::string junit;                       // also write the results here, as JUnit XML
  std::string gradescope;                  // ... and here, as Gradescope's results.json
  std::map<std::string, unsigned> points;  // --points: a check's weight (1 when not given)
  Limits limits;                           // --max-memory, and --timeout's deadline
};

// Every check grade has, for --points to name.
inline const std::vector<std::string> check_names = {
    "answers-the-three-questions",
    "question-in-pieces",
    "questions-in-one-packet",
    "survives-client-error",
    "survives-reset",
    "question-limit",
    "concurrency",
    "seeded-replies",
    "clean-shutdown",
    "asks-the-three-questions",
    "prints-each-reply",
    "exits-zero",
    "sends-a-question-without-its-mark-then-closes",
    "cycles-through-the-questions",
    "waits-before-each-question",
    "stops-when-the-server-closes"};

// "not run: the time limit ran out": how a check after the deadline fails.
bool out_of_time(const GradeOptions& options);

// Grading cannot run (the server never came up, the command cannot start): exit status 2.
struct CannotGrade : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What a check saw instead of what it expected: the end of its FAIL line. Never holds a port, a
// time or a process id, so that the report is the same on every run.
struct Came : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The lines a grading script diffs: "PASS name" or "FAIL name: expected; came", then a score:
// the points of the checks passed, out of all their points.
class Report {
 public:
  explicit Report(std::map<std::string, unsigned> points);
  void pass(std::string_view name, std::string_view expected);
  void fail(std::string_view name, std::string_view expected, std::string_view came);
  // Prints "score K/N", writes the JUnit and Gradescope files if asked; the exit status: 0 all
  // passed, else 1.
  int finish(std::string_view suite, const GradeOptions& options) const;
  // Grading could not run: Gradescope's file, if asked, says why with a score of 0.
  void cannot_grade(const std::string& why, const std::string& gradescope_file) const;

 private:
  struct Result {
    std::string name;
    std::string expected;
    std::string failure;  // empty when the check passed
    unsigned points;
  };
  void write_junit(std::string_view suite, const std::string& file) const;
  void write_gradescope(const std::string& file, const std::string& output) const;
  std::map<std::string, unsigned> points_;
  std::vector<Result> results_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

// "exit status 1", "killed by signal 15 (Terminated)": how a wait status reads in a report.
std::string describe_exit(int status);
bool exited_zero(int status);

// COMMAND ARGS with every {host} and {port} replaced.
std::vector<std::string> substitute(std::vector<std::string> command, std::string_view host,
                                    std::string_view port);

// A TCP socket bound to 127.0.0.1 and a port the kernel chose, written in `port`. Not
// get_server_socket, which prints the port: grade's stdout is the report.
Fd bind_loopback(std::string& port);

// Reads from `sock` give up after `timeout` (EAGAIN): every wait of grade's is bounded.
void set_receive_timeout(int sock, std::chrono::milliseconds timeout);

// Text a program sent, as a report quotes it: escaped, in quotes, cut short at about 80 bytes.
std::string quote(std::string_view text);

void grade_server(const GradeOptions& options, Report& report);
void grade_client(const GradeOptions& options, Report& report);
