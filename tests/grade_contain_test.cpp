// bin/grade against students' servers that misbehave (tests/misbehaving_server.py): each is graded
// through pipes, as a grading script runs grade (`grade ... 2>&1 | tee report`). grade must close
// its pipes within `bound`, say in its report what the server did, and leave no process of the
// server behind. The tests find a server's processes by a marker in their command line, unique to
// the test run: other test suites run on this machine at the same time.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <thread>

#include "tests/support.hpp"

namespace {
const std::string misbehaving = std::string(SOURCE_DIR) + "/tests/misbehaving_server.py";
// None of these gradings needs more than about 10 s (a server that ignores SIGTERM costs 5 s);
// the bound only says that grade returned at all, as today's grade did not.
constexpr auto bound = 60s;

bool have_python() { return std::system("command -v python3 >/dev/null 2>&1") == 0; }

std::string new_marker(const std::string& kind) {
  static int runs = 0;
  return "sphinx-grade-contain-" + std::to_string(getpid()) + "-" + std::to_string(++runs) + "-" +
         kind;
}

struct Graded {
  std::optional<int> exit_code;  // nullopt: grade's pipes were still open after `bound`
  std::string report;
  std::string err;
  std::size_t left = 0;  // processes of the server still there once grade had returned
};

// grade server OPTIONS -- python3 misbehaving_server.py KIND {host} {port} MARKER, or through
// `sh -c` when `through_shell`. Kills whatever of the server is left, after counting it.
Graded grade_misbehaving(const std::string& kind, const std::vector<std::string>& options,
                         bool through_shell = false) {
  const std::string marker = new_marker(kind);
  std::vector<std::string> args = {"server"};
  args.insert(args.end(), options.begin(), options.end());
  args.emplace_back("--");
  if (through_shell) {  // a wrapper that does not exec: sh stays the server's parent
    args.insert(args.end(), {"sh", "-c", "python3 \"$0\" \"$1\" \"$2\" \"$3\" \"$4\"; echo ended",
                             misbehaving, kind, "{host}", "{port}", marker});
  } else {
    args.insert(args.end(), {"python3", misbehaving, kind, "{host}", "{port}", marker});
  }
  Graded graded;
  Child grade("grade", args);
  graded.exit_code = grade.wait_exit(bound);
  graded.report = grade.out();
  graded.err = grade.err();
  const std::vector<pid_t> left = processes_with(marker);
  graded.left = left.size();
  // Before grade's Child goes: its pipes close, and its destructor returns, only once no stray
  // holds them.
  grade.send_signal(SIGKILL);
  for (const pid_t pid : left) kill(pid, SIGKILL);
  return graded;
}

std::string line_of(const std::string& report, const std::string& check) {
  for (const std::string& line : lines(report)) {
    if (line.starts_with("PASS " + check) || line.starts_with("FAIL " + check + ":")) return line;
  }
  return "<no line for " + check + ">";
}

const std::vector<std::string> question_checks = {"answers-the-three-questions",
                                                  "question-in-pieces", "questions-in-one-packet",
                                                  "survives-client-error", "survives-reset"};

// Every question check passed: the misbehaviour did not keep grade from grading the server.
void expect_questions_graded(const Graded& graded) {
  for (const std::string& check : question_checks) {
    EXPECT_EQ(line_of(graded.report, check), "PASS " + check) << graded.report << graded.err;
  }
}
}  // namespace

class GradeContains : public testing::Test {
 protected:
  void SetUp() override {
    if (!have_python()) GTEST_SKIP() << "no python3";
  }
};

TEST_F(GradeContains, ChildrenPerConnectionThatIgnoreSigtermAndOutliveTheirClient) {
  const Graded graded =
      grade_misbehaving("fork-per-connection", {"--pattern", "thread-per-client"});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  expect_questions_graded(graded);
  EXPECT_EQ(line_of(graded.report, "concurrency"), "PASS concurrency");
  EXPECT_EQ(line_of(graded.report, "clean-shutdown"),
            "FAIL clean-shutdown: exit status 0 within 5 s of SIGTERM, and no process of it left; "
            "exit status 0, but processes it started still ran 5 s after SIGTERM (grade killed "
            "them)");
  EXPECT_EQ(graded.left, 0U);
}

TEST_F(GradeContains, AServerStartedThroughAShellThatDoesNotExec) {
  const Graded graded = grade_misbehaving("well", {}, true);
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  expect_questions_graded(graded);
  EXPECT_EQ(line_of(graded.report, "clean-shutdown"),
            "FAIL clean-shutdown: exit status 0 within 5 s of SIGTERM, and no process of it left; "
            "killed by signal 15 (Terminated)");
  EXPECT_EQ(graded.left, 0U);
}

TEST_F(GradeContains, ADaemonIsGradedAndStopped) {
  const Graded graded = grade_misbehaving("daemonizes", {});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  expect_questions_graded(graded);
  EXPECT_EQ(line_of(graded.report, "clean-shutdown"), "PASS clean-shutdown") << graded.err;
  EXPECT_EQ(graded.exit_code, 0) << graded.report << graded.err;
  EXPECT_EQ(graded.left, 0U);
}

TEST_F(GradeContains, AServerThatIgnoresSigtermAndForksAHelper) {
  const Graded graded = grade_misbehaving("ignores-sigterm", {});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  expect_questions_graded(graded);
  EXPECT_EQ(line_of(graded.report, "clean-shutdown"),
            "FAIL clean-shutdown: exit status 0 within 5 s of SIGTERM, and no process of it left; "
            "still running 5 s after SIGTERM (grade killed it)");
  EXPECT_EQ(graded.left, 0U);
}

// A chain of processes, each forking the next and exiting at once, that ignores SIGTERM: no
// single look at /proc may take it for gone, so clean-shutdown fails, and grade still kills it.
TEST_F(GradeContains, AForkChainThatIgnoresSigtermIsNotGone) {
  const Graded graded = grade_misbehaving("fork-chain", {});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  expect_questions_graded(graded);
  EXPECT_EQ(line_of(graded.report, "clean-shutdown"),
            "FAIL clean-shutdown: exit status 0 within 5 s of SIGTERM, and no process of it left; "
            "exit status 0, but processes it started still ran 5 s after SIGTERM (grade killed "
            "them)")
      << graded.report;
  EXPECT_EQ(graded.left, 0U);
}

// Each child in a process group of its own: grade does not find them by group or session.
TEST_F(GradeContains, FortyChildrenEachInItsOwnProcessGroup) {
  const Graded graded = grade_misbehaving("forks-40-groups", {});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  expect_questions_graded(graded);
  EXPECT_EQ(graded.left, 0U);
}

// 50 MB on stderr while it serves: grade shows 64 KiB of it, then says how much it did not show.
TEST_F(GradeContains, AFloodOnStderrIsCutAt64KiB) {
  const Graded graded = grade_misbehaving("floods-stderr", {});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 0) << graded.report;
  expect_questions_graded(graded);
  const std::size_t cut = graded.err.rfind("\ngrade: ");
  ASSERT_NE(cut, std::string::npos) << graded.err.size() << " bytes on stderr, no grade line";
  // 64 KiB at most of the server's, and grade's newline if the cut fell inside a line
  EXPECT_LE(cut, 64U * 1024) << "more than 64 KiB of the server's stderr shown";
  EXPECT_TRUE(std::regex_match(graded.err.substr(cut + 1),
                               std::regex("grade: [0-9]+ more bytes of the server's stderr not "
                                          "shown\n")))
      << graded.err.substr(cut + 1);
  EXPECT_EQ(graded.left, 0U);
}

// As a grading script runs grade, `2>&1 | tee report`: a line the server leaves unfinished on its
// stderr must not run into a line of the report.
TEST_F(GradeContains, AnUnfinishedStderrLineStaysOffTheReportLines) {
  const std::string marker = new_marker("unfinished-line");
  Child grade("/bin/sh",
              {"-c", "exec \"$0\" \"$@\" 2>&1", std::string(BIN_DIR) + "/grade", "server", "--",
               "python3", misbehaving, "unfinished-line", "{host}", "{port}", marker});
  EXPECT_EQ(grade.wait_exit(bound), 0) << grade.out();
  for (const std::string& line : lines(grade.out())) {
    EXPECT_TRUE(line.starts_with("PASS ") || line.starts_with("score ") ||
                line == "Warning: no newline")
        << grade.out();
  }
  const std::vector<pid_t> left = processes_with(marker);
  EXPECT_TRUE(left.empty()) << left.size() << " processes left";
  grade.send_signal(SIGKILL);
  for (const pid_t pid : left) kill(pid, SIGKILL);
}

// The `buf += data` bug, made large: past --max-memory the server is killed, the check running
// fails naming the limit, and grade starts it again for the next check.
TEST_F(GradeContains, MaxMemoryStopsAServerThatKeepsEveryRecv) {
  const Graded graded = grade_misbehaving("grows-memory", {"--max-memory", "100"});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  EXPECT_NE(graded.report.find("; the server used more than 100 MiB\n"), std::string::npos)
      << graded.report << graded.err;
  EXPECT_NE(graded.err.find("grade: the server used more than 100 MiB during "), std::string::npos)
      << graded.err;
  EXPECT_EQ(graded.left, 0U);
}

// Past --max-memory grade kills every process of the server, but one dying, or forked while grade
// killed, can still hold the listening socket for a moment: the check must still name the limit,
// not a closed connection, and grade start the server again.
TEST_F(GradeContains, MaxMemoryNamedWhenChildrenHoldTheListeningSocket) {
  const Graded graded = grade_misbehaving("forks-memory", {"--max-memory", "200"});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  for (const std::string& line : lines(graded.report)) {
    if (line.starts_with("FAIL ")) {
      EXPECT_TRUE(line.ends_with("; the server used more than 200 MiB")) << graded.report;
    }
  }
  EXPECT_EQ(graded.left, 0U);
}

// --timeout: the checks not yet run fail as not run, and the report is kept.
TEST_F(GradeContains, TimeoutKeepsThePartialReport) {
  const auto start = std::chrono::steady_clock::now();
  const Graded graded = grade_misbehaving("stalls", {"--timeout", "3"});
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  EXPECT_EQ(line_of(graded.report, "clean-shutdown"),
            "FAIL clean-shutdown: exit status 0 within 5 s of SIGTERM, and no process of it left; "
            "not run: the time limit ran out")
      << graded.report;
  EXPECT_TRUE(graded.report.ends_with("\nscore 0/6\n")) << graded.report;
  EXPECT_LT(took, 20s) << "a 3 s limit";
  EXPECT_EQ(graded.left, 0U);
}

// The limit runs out while clean-shutdown waits for children that ignore SIGTERM: grade killing
// them is not the server stopping cleanly, so the check is cut short, not passed.
TEST_F(GradeContains, TimeoutDuringCleanShutdownIsNotAPass) {
  const Graded graded = grade_misbehaving("fork-per-connection", {"--timeout", "4"});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  // "cut short" when the checks before took under 4 s, as they do; "not run" on a slow machine
  EXPECT_TRUE(std::regex_match(line_of(graded.report, "clean-shutdown"),
                               std::regex("FAIL clean-shutdown: .*; (cut short|not run): the time "
                                          "limit ran out")))
      << graded.report;
  EXPECT_EQ(graded.left, 0U);
}

TEST_F(GradeContains, AServerThatNeverListens) {
  const Graded graded = grade_misbehaving("never-listens", {"--timeout", "2"});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 2) << graded.report << graded.err;
  EXPECT_EQ(graded.err,
            "grade: the server did not accept connections before the time limit ran out\n");
  EXPECT_EQ(graded.left, 0U);
}

TEST_F(GradeContains, AServerThatExitsAtOnceLeavingAChild) {
  const Graded graded = grade_misbehaving("exits-at-once", {});
  ASSERT_TRUE(graded.exit_code) << "grade's pipes still open after 60 s\n" << graded.report;
  EXPECT_EQ(graded.exit_code, 2) << graded.report << graded.err;
  EXPECT_EQ(graded.err, "grade: the server ended (exit status 3) before it accepted connections\n");
  EXPECT_EQ(graded.left, 0U);
}

// SIGTERM to grade itself (a platform's timeout, a Ctrl-C): it kills the server's processes, all
// of them, and exits 2.
TEST_F(GradeContains, GradeInterruptedKillsTheServerAndExits) {
  for (const int number : {SIGTERM, SIGINT}) {
    const std::string marker = new_marker("interrupted");
    Child grade("grade", {"server", "--", "python3", misbehaving, "ignores-sigterm", "{host}",
                          "{port}", marker});
    ASSERT_TRUE(starts_with(grade.read_line(), "PASS answers-the-three-questions"))
        << grade.out() << grade.err();
    grade.send_signal(number);
    EXPECT_EQ(grade.wait_exit(bound), 2) << grade.out() << grade.err();
    EXPECT_TRUE(grade.err().ends_with("grade: stopped by signal " + std::to_string(number) + " (" +
                                      strsignal(number) + ")\n"))
        << grade.err();
    const std::vector<pid_t> left = processes_with(marker);
    EXPECT_TRUE(left.empty()) << left.size() << " processes left";
    grade.send_signal(SIGKILL);
    for (const pid_t pid : left) kill(pid, SIGKILL);
  }
}

// The time limit also bounds a client: one that never connects is stopped at the deadline, and
// each of its checks says so.
// A client that prints without end (`while True: print(data)` once the server closed) must not
// fill grade's memory: grade keeps the first MiB of its stdout. Here grade runs in 384 MiB of
// address space, and the client prints 512 MiB.
TEST_F(GradeContains, AClientFloodingStdoutDoesNotFillGradesMemory) {
  if (under_address_sanitizer || under_thread_sanitizer) {
    GTEST_SKIP() << "the sanitizers reserve more address space than the limit";
  }
  const std::string marker = new_marker("client-flood");
  Child grade("/bin/sh", {"-c", "ulimit -v 393216 && exec \"$0\" \"$@\"",
                          std::string(BIN_DIR) + "/grade", "client", "--", "python3", "-c",
                          "import os\nfor _ in range(512): os.write(1, b'y' * (1 << 20))", marker});
  EXPECT_EQ(grade.wait_exit(bound), 1) << grade.out() << grade.err();
  EXPECT_NE(grade.out().find("\nPASS exits-zero\n"), std::string::npos)
      << grade.out() << grade.err();
  const std::vector<pid_t> left = processes_with(marker);
  EXPECT_TRUE(left.empty()) << left.size() << " processes left";
  grade.send_signal(SIGKILL);
  for (const pid_t pid : left) kill(pid, SIGKILL);
}

TEST_F(GradeContains, TimeoutStopsAClientThatNeverConnects) {
  const std::string marker = new_marker("client");
  Child grade("grade", {"client", "--timeout", "1", "--", "python3", "-c",
                        "import time; time.sleep(60)", marker});
  EXPECT_EQ(grade.wait_exit(bound), 1) << grade.out() << grade.err();
  EXPECT_EQ(grade.out(),
            "FAIL asks-the-three-questions: the lab's three questions, in order, then the end; cut "
            "short: the time limit ran out\n"
            "FAIL prints-each-reply: each reply grade sent on a line of its own, nothing else; cut "
            "short: the time limit ran out\n"
            "FAIL exits-zero: exit status 0; cut short: the time limit ran out\n"
            "score 0/3\n");
  const std::vector<pid_t> left = processes_with(marker);
  EXPECT_TRUE(left.empty()) << left.size() << " processes left";
  grade.send_signal(SIGKILL);
  for (const pid_t pid : left) kill(pid, SIGKILL);
}
