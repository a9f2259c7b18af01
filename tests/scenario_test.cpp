// make run-* (scripts/run_scenario.sh): every line says who printed it, the normal end reads as
// normal, a client that fails fails the run and stops the server, and the timeline under the run
// (scripts/timeline.sh) shows who was served when.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/support.hpp"

namespace {
const std::string source_dir = SOURCE_DIR;

// run_scenario.sh BIN_DIR SERVER PORT CLIENTS DELAY QUESTIONS, on a port the kernel chooses.
// Under timeout(1), which signals its whole process group: a run that hangs ends with status
// 124 and leaves no server or client behind holding the test's pipes.
Child scenario(const std::string& bin_dir, const std::string& server, int clients,
               const std::string& delay, int questions) {
  return Child("/usr/bin/env",
               {"timeout", "15", "bash", source_dir + "/scripts/run_scenario.sh", bin_dir, server,
                "0", std::to_string(clients), delay, std::to_string(questions)});
}

// One timeline row: the columns of its replies (a column may hold several), and its end mark.
struct Row {
  std::vector<std::size_t> replies;
  char end = ' ';
};

// The rows of the timeline a run printed ("client 2  ...o-o-o|"), by client number.
std::vector<Row> timeline_rows(const std::string& out) {
  std::vector<Row> rows;
  const std::regex row_line(R"(^client (\d+) +([ .o|x-]+)$)");
  for (const std::string& line : lines(out)) {
    std::smatch match;
    if (!std::regex_match(line, match, row_line)) continue;
    const std::string marks = line.substr(10);  // after the label, "client %-3d"
    Row row;
    for (std::size_t c = 0; c < marks.size(); ++c) {
      if (marks[c] == 'o') row.replies.push_back(c);
    }
    row.end = marks.back();
    rows.push_back(row);
  }
  return rows;
}

bool contains(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// A directory with the real server_epoll and a client_questions of which one copy (whichever
// starts first) fails at once with exit status 3; the others are the real client.
class FailingClientDir {
 public:
  FailingClientDir() {
    std::filesystem::create_directories(path);
    std::filesystem::create_symlink(std::string(BIN_DIR) + "/server_epoll", path + "/server_epoll");
    std::ofstream(path + "/fail-once").put('\n');
    std::ofstream client(path + "/client_questions");
    client << "#!/bin/sh\n"
           << "if rm \"" << path << "/fail-once\" 2>/dev/null; then\n"
           << "  echo 'client_questions: cannot connect: refused on purpose' >&2; exit 3\n"
           << "fi\n"
           << "exec " << BIN_DIR << "/client_questions \"$@\"\n";
    client.close();
    std::filesystem::permissions(path + "/client_questions", std::filesystem::perms::owner_all);
  }
  ~FailingClientDir() { std::filesystem::remove_all(path); }
  FailingClientDir(const FailingClientDir&) = delete;
  FailingClientDir& operator=(const FailingClientDir&) = delete;
  const std::string path = std::filesystem::temp_directory_path().string() + "/sphinx-scenario-" +
                           std::to_string(getpid());
};
}  // namespace

TEST(Scenario, EveryLineSaysWhoPrintedItAndTheNormalEndReadsAsDone) {
  Child run = scenario(BIN_DIR, "server_epoll", 3, "0.05", 3);
  ASSERT_EQ(run.wait_exit(20s), 0) << run.out() << run.err();
  EXPECT_EQ(run.err(), "");
  const std::vector<std::string> out = lines(run.out());
  ASSERT_FALSE(out.empty());
  EXPECT_TRUE(starts_with(out.front(), "server: Listening for incoming connections at "));
  for (int k = 1; k <= 3; ++k) {
    EXPECT_TRUE(contains(out, "client " + std::to_string(k) +
                                  ": done: the server closed the connection after 3 replies"))
        << run.out();
  }
  EXPECT_TRUE(contains(out, "server: Shutting down")) << run.out();
  // Nothing unprefixed before the closing summary, and the client's own "closed" message,
  // which reads like an error, is not shown on a normal end.
  const auto summary = std::find_if(out.begin(), out.end(), [](const std::string& line) {
    return line.starts_with(
        "server_epoll: 3 clients, 3 questions each, 0.05 s apart: the run took");
  });
  ASSERT_NE(summary, out.end()) << run.out();
  for (auto line = out.begin(); line != summary; ++line) {
    EXPECT_TRUE(line->starts_with("server: ") || line->starts_with("client ")) << *line;
    EXPECT_EQ(line->find("client_questions:"), std::string::npos) << *line;
  }
}

TEST(Scenario, AFailingClientFailsTheRunAndStopsTheServer) {
  const FailingClientDir bin;
  // Without the failure this run takes 5 s (10 questions, 0.5 s apart); stopped at the failure,
  // the other clients end before their first question.
  Child run = scenario(bin.path, "server_epoll", 3, "0.5", 10);
  EXPECT_EQ(run.wait_exit(20s), 1) << run.out() << run.err();
  const std::vector<std::string> out = lines(run.out());
  int failed = 0;
  for (const std::string& line : out) {
    if (line.find(": client_questions: cannot connect: refused on purpose") != std::string::npos) {
      ++failed;
    }
  }
  EXPECT_EQ(failed, 1) << run.out();
  EXPECT_NE(run.out().find(": failed (exit status 3) after 0 replies\n"), std::string::npos)
      << run.out();
  EXPECT_TRUE(contains(out, "server: Shutting down")) << run.out();
  EXPECT_EQ(run.out().find("after 10 replies"), std::string::npos)
      << "the server was not stopped when the client failed:\n"
      << run.out();
}

TEST(Timeline, DrawsAFixedRunAsTheGoldenText) {
  Child draw("/usr/bin/env", {"bash", source_dir + "/scripts/timeline.sh", "--width", "30",
                              "--span", "2.4", source_dir + "/tests/data/timeline.events"});
  EXPECT_EQ(draw.wait_exit(), 0) << draw.err();
  EXPECT_EQ(draw.out(), read_file(source_dir + "/tests/data/timeline.expected"));
}

TEST(Timeline, ColoursOnlyWhenAsked) {
  Child draw("/usr/bin/env", {"bash", source_dir + "/scripts/timeline.sh", "--color", "--width",
                              "30", "--span", "2.4", source_dir + "/tests/data/timeline.events"});
  EXPECT_EQ(draw.wait_exit(), 0) << draw.err();
  EXPECT_NE(draw.out().find("\033[32mo\033[0m"), std::string::npos) << draw.out();
  // Without its colour codes, the same text.
  EXPECT_EQ(std::regex_replace(draw.out(), std::regex("\033\\[[0-9;]*m"), ""),
            read_file(source_dir + "/tests/data/timeline.expected"));
}

// server_simple serves one client after another: each row begins (its second reply, allowing
// the first to share a column with the previous row's last) only after the previous row's last
// reply, taking the rows in the order they were served.
TEST(Scenario, TheSimpleServerTimelineIsAStaircase) {
  Child run = scenario(BIN_DIR, "server_simple", 3, "0.1", 3);
  ASSERT_EQ(run.wait_exit(20s), 0) << run.out() << run.err();
  std::vector<Row> rows = timeline_rows(run.out());
  ASSERT_EQ(rows.size(), 3U) << run.out();
  for (const Row& row : rows) {
    ASSERT_GE(row.replies.size(), 2U) << run.out();
    EXPECT_EQ(row.end, '|') << run.out();
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.replies.front() < b.replies.front(); });
  for (std::size_t k = 1; k < rows.size(); ++k) {
    EXPECT_GT(rows[k].replies[1], rows[k - 1].replies.back()) << run.out();
  }
}

// server_epoll serves all clients at once: every row's first reply comes before every other
// row's last.
TEST(Scenario, TheEpollServerTimelineRowsOverlap) {
  Child run = scenario(BIN_DIR, "server_epoll", 3, "0.1", 3);
  ASSERT_EQ(run.wait_exit(20s), 0) << run.out() << run.err();
  const std::vector<Row> rows = timeline_rows(run.out());
  ASSERT_EQ(rows.size(), 3U) << run.out();
  for (const Row& a : rows) {
    ASSERT_FALSE(a.replies.empty()) << run.out();
    EXPECT_EQ(a.end, '|') << run.out();
    for (const Row& b : rows) {
      EXPECT_LT(a.replies.front(), b.replies.back()) << run.out();
    }
  }
}
