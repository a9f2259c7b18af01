// async_sync, the lab's Figure 1: exact output, and the 6 s against 3 s claim as a ratio.
#include <gtest/gtest.h>

#include <regex>

#include "tests/support.hpp"

namespace {
struct Timed {
  std::vector<std::string> lines;
  double seconds;
  std::string err;
};

Timed run_async_sync(const std::vector<std::string>& args) {
  const auto start = std::chrono::steady_clock::now();
  Child child("async_sync", args);
  EXPECT_EQ(child.wait_exit(), 0) << child.err();
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return {lines(child.out()), took.count(), child.err()};
}

void expect_the_labs_lines(const std::vector<std::string>& got, int clients) {
  ASSERT_EQ(got.size(), static_cast<std::size_t>(clients + 2));
  const std::regex begin("begin at time [0-2][0-9]:[0-5][0-9]:[0-6][0-9]");
  const std::regex end("end at time [0-2][0-9]:[0-5][0-9]:[0-6][0-9]");
  EXPECT_TRUE(std::regex_match(got.front(), begin)) << got.front();
  for (int k = 1; k <= clients; ++k) EXPECT_EQ(got[k], "talked to client " + std::to_string(k));
  EXPECT_TRUE(std::regex_match(got.back(), end)) << got.back();
}
}  // namespace

TEST(AsyncSync, SyncTakesTheSumOfTheDelaysAndAsyncOnlyOne) {
  const Timed in_turn = run_async_sync({"sync", "--delay", "0.3"});
  const Timed at_once = run_async_sync({"async", "--delay", "0.3"});
  expect_the_labs_lines(in_turn.lines, 2);
  expect_the_labs_lines(at_once.lines, 2);
  EXPECT_GE(in_turn.seconds, 0.55);  // two sleeps of 0.3 s cannot take less
  // The lab's 6 s against 3 s: a ratio of 2, checked with room for a noisy machine.
  EXPECT_GT(in_turn.seconds / at_once.seconds, 1.3)
      << in_turn.seconds << " s against " << at_once.seconds;
}

TEST(AsyncSync, FiveClientsMakeSyncAboutFiveTimesSlower) {
  const Timed in_turn = run_async_sync({"sync", "--delay", "0.2", "--clients", "5"});
  const Timed at_once = run_async_sync({"async", "--delay", "0.2", "--clients", "5"});
  expect_the_labs_lines(in_turn.lines, 5);
  expect_the_labs_lines(at_once.lines, 5);
  EXPECT_GE(in_turn.seconds, 0.95);
  EXPECT_GT(in_turn.seconds / at_once.seconds, 2.5)
      << in_turn.seconds << " s against " << at_once.seconds;
}

// The lab's clock reads whole seconds (sync and async both look like "1 s" with --delay 0.5), so
// the program also says how long it took, on stderr: stdout stays the lab's four lines.
TEST(AsyncSync, SaysHowLongTheRunTookToTheHundredthOnStderr) {
  const std::regex took("the run took ([0-9]+\\.[0-9][0-9]) s\n");
  std::smatch match;
  const Timed in_turn = run_async_sync({"sync", "--delay", "0.3"});
  expect_the_labs_lines(in_turn.lines, 2);
  ASSERT_TRUE(std::regex_match(in_turn.err, match, took)) << in_turn.err;
  const double sync_said = std::stod(match[1]);
  EXPECT_GE(sync_said, 0.595);  // two sleeps of 0.3 s
  EXPECT_LE(sync_said, in_turn.seconds + 0.005) << "more than the run took from outside";
  const Timed at_once = run_async_sync({"async", "--delay", "0.3"});
  expect_the_labs_lines(at_once.lines, 2);
  ASSERT_TRUE(std::regex_match(at_once.err, match, took)) << at_once.err;
  const double async_said = std::stod(match[1]);
  EXPECT_GE(async_said, 0.295);
  EXPECT_GT(sync_said / async_said, 1.3) << sync_said << " s against " << async_said;
}

TEST(AsyncSync, TimersThatFireTogetherFinishInClientOrder) {
  expect_the_labs_lines(run_async_sync({"async", "--delay", "0", "--clients", "40"}).lines, 40);
}

TEST(AsyncSync, AsyncRunsOnOneThread) {
  Child child("async_sync", {"async", "--delay", "0.5", "--clients", "8"});
  EXPECT_TRUE(starts_with(child.read_line(), "begin at time "));
  EXPECT_EQ(thread_count(child.pid()), 1);
  EXPECT_EQ(child.wait_exit(), 0);
}

TEST(AsyncSync, BadCommandLinesExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{},
                                             {"later"},
                                             {"sync", "--delay", "-1"},
                                             {"async", "--delay", "soon"},
                                             {"async", "--clients", "0"},
                                             {"async", "--clients", "4000000000"},
                                             {"sync", "async"}}) {
    Child child("async_sync", args);
    EXPECT_EQ(child.wait_exit(), 2);
    EXPECT_TRUE(starts_with(child.err(), "async_sync: ")) << child.err();
    EXPECT_NE(child.err().find("\nusage: async_sync sync|async"), std::string::npos);
  }
}
