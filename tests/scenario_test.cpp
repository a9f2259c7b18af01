// make run-* (scripts/run_scenario.sh): every line says who printed it, the normal end reads as
// normal, and a client that fails fails the run and stops the server.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support.hpp"

namespace {
const std::string source_dir = SOURCE_DIR;

// run_scenario.sh BIN_DIR SERVER PORT CLIENTS DELAY QUESTIONS, on a port the kernel chooses.
Child scenario(const std::string& bin_dir, const std::string& server, int clients,
               const std::string& delay, int questions) {
  return Child("/usr/bin/env", {"bash", source_dir + "/scripts/run_scenario.sh", bin_dir, server,
                                "0", std::to_string(clients), delay, std::to_string(questions)});
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
