// The lecture kit: make compare, the trace condenser, and docs/WALKTHROUGH.md kept in step
// with the code. (The live make trace-* targets need ptrace and are not run here.)
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/cli.hpp"
#include "tests/support.hpp"

namespace {
const std::string source_dir = SOURCE_DIR;

// Every C++ source file of the programs and common/.
std::string all_sources() {
  std::string text;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(source_dir)) {
    const std::string path = entry.path().string();
    if (path.find("/build/") != std::string::npos || path.find("/tests/") != std::string::npos) {
      continue;
    }
    if (entry.path().extension() == ".cpp" || entry.path().extension() == ".hpp") {
      text += read_file(path);
    }
  }
  return text;
}

// Whether `text` holds `name(` as a whole name: `ask(` is not found inside `task(`.
bool calls_or_defines(const std::string& text, const std::string& name) {
  const std::string call = name + "(";
  for (std::size_t at = text.find(call); at != std::string::npos; at = text.find(call, at + 1)) {
    const char before = at == 0 ? ' ' : text[at - 1];
    if (std::isalnum(static_cast<unsigned char>(before)) == 0 && before != '_') return true;
  }
  return false;
}

// A path the walk-through names: a source in the tree, or a build output the Makefile makes
// (checked in the Makefile, never in build/, which a fresh clone or a sanitizer build lacks).
bool names_something_real(const std::string& name) {
  for (const auto& [dir, variable] : {std::pair{"build/", "$(BUILD)/"}, {"bin/", "$(BIN)/"}}) {
    if (name.starts_with(dir)) {
      return read_file(source_dir + "/Makefile").find(variable + name.substr(std::strlen(dir))) !=
             std::string::npos;
    }
  }
  return std::filesystem::exists(std::filesystem::path(source_dir) / name);
}
}  // namespace

TEST(Compare, PrintsTheDiffOfEveryPairOfPatterns) {
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"simple", "threads"}, {"simple", "epoll"}, {"threads", "epoll"}}) {
    Child make("/usr/bin/env", {"make", "--no-print-directory", "-s", "-C", source_dir, "compare",
                                "A=" + a, "B=" + b});
    EXPECT_EQ(make.wait_exit(), 0) << make.err();
    const std::vector<std::string> diff = lines(make.out());
    ASSERT_GE(diff.size(), 3U) << make.out();
    EXPECT_TRUE(starts_with(diff[0], "--- server_" + a + "/main.cpp")) << diff[0];
    EXPECT_TRUE(starts_with(diff[1], "+++ server_" + b + "/main.cpp")) << diff[1];
  }
}

TEST(Compare, SimpleAgainstThreadsIsTheThreads) {
  Child make("/usr/bin/env", {"make", "--no-print-directory", "-s", "-C", source_dir, "compare",
                              "A=simple", "B=threads"});
  EXPECT_EQ(make.wait_exit(), 0);
  const std::string diff = make.out();
  EXPECT_NE(diff.find("+  std::vector<std::jthread> pool;"), std::string::npos) << diff;
  EXPECT_NE(diff.find("-  setup_connections(listener.get(), options);"), std::string::npos);
  EXPECT_LT(lines(diff).size(), 40U) << "the slide should fit on a screen";
}

TEST(Compare, AnUnknownPatternIsAUsageError) {
  Child make("/usr/bin/env", {"make", "--no-print-directory", "-s", "-C", source_dir, "compare",
                              "A=simple", "B=fibers"});
  EXPECT_NE(make.wait_exit(), 0);
  EXPECT_NE(make.err().find("B must be one of: simple threads epoll"), std::string::npos);
}

// Checked in CI only, as the next test: a student's exercise may rename or reshape a handler.
TEST(Slides, CutEveryFunctionTheyShowFromTheSourcesInCi) {
  if (std::getenv("CI") == nullptr) GTEST_SKIP() << "CI is not set: checked in CI only";
  Child slides("/usr/bin/env", {"bash", source_dir + "/scripts/slides.sh", source_dir});
  EXPECT_EQ(slides.wait_exit(), 0) << slides.err();
  // Each slide's two sides: common/server.cpp and server_simple/main.cpp on the left,
  // server_epoll/connection.cpp and server_epoll/main.cpp on the right.
  for (const char* function :
       {"void process_connection(", "Want on_readable(", "Want on_writable(",
        "bool process_request(", "void answer(", "Want on_all_sent(", "void setup_connections(",
        "void on_acceptable(", "int main(", "void serve("}) {
    EXPECT_NE(slides.out().find(function), std::string::npos) << function;
  }
}

// The checked-in slides match the sources where the repository is released: in CI (CI=true,
// which .ci/run sets, as CI services do). A student's change to server_epoll (the exercises)
// must not fail make test on the lecture's generated slides.
TEST(Slides, AreCurrentWithTheSourcesInCi) {
  if (std::getenv("CI") == nullptr) GTEST_SKIP() << "CI is not set: checked in CI only";
  Child slides("/usr/bin/env", {"bash", source_dir + "/scripts/slides.sh", source_dir});
  EXPECT_EQ(slides.wait_exit(), 0) << slides.err();
  EXPECT_TRUE(slides.out() == read_file(source_dir + "/docs/SLIDES.md"))
      << "docs/SLIDES.md is stale: run make slides";
}

TEST(TraceCondenser, TurnsARawStraceIntoOneLinePerCall) {
  Child condense("/usr/bin/env", {"bash", source_dir + "/scripts/condense_trace.sh",
                                  source_dir + "/tests/data/strace-threads.txt"});
  EXPECT_EQ(condense.wait_exit(), 0) << condense.err();
  EXPECT_EQ(condense.out(), read_file(source_dir + "/tests/data/strace-threads.expected"));
  // What the lecture points at: two threads blocked in accept4 side by side.
  EXPECT_NE(condense.out().find("T2  accept4(3) = 4  client 127.0.0.1:46464   [blocked"),
            std::string::npos);
  EXPECT_NE(condense.out().find("T3  accept4(3) = 5  client 127.0.0.1:46462   [blocked"),
            std::string::npos);
}

TEST(Walkthrough, EveryFunctionAndFileItNamesExists) {
  const std::string text = read_file(source_dir + "/docs/WALKTHROUGH.md");
  ASSERT_FALSE(text.empty());
  std::string prose;  // the walk-through without its fenced (Python) code blocks
  bool fenced = false;
  for (const std::string& line : lines(text)) {
    if (line.rfind("```", 0) == 0) {
      fenced = !fenced;
    } else if (!fenced) {
      prose += line + "\n";
    }
  }
  const std::string sources = all_sources();
  const std::regex span("`([^`]+)`");
  const std::regex function(R"(^(?:[A-Za-z_]\w*::)?([A-Za-z_]\w*)\(\)$)");
  const std::regex file(R"(^[\w./-]+\.(cpp|hpp|sh|md)$|^[\w.-]+/[\w./-]*$)");
  int functions = 0;
  int files = 0;
  for (auto it = std::sregex_iterator(prose.begin(), prose.end(), span);
       it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1];
    std::smatch match;
    if (std::regex_match(name, match, function)) {
      ++functions;
      EXPECT_TRUE(calls_or_defines(sources, match[1]))
          << "WALKTHROUGH.md names " << name << ", which no source defines";
    } else if (std::regex_match(name, file)) {
      ++files;
      EXPECT_TRUE(names_something_real(name))
          << "WALKTHROUGH.md names " << name << ", which is neither in the tree nor made by make";
    }
  }
  EXPECT_GT(functions, 20);  // the check itself must not silently match nothing
  EXPECT_GT(files, 10);
}

// The ExtraOptions sample in docs/EXERCISES.md prints its help line in the columns of the
// server's own help: a description starts where the others start.
TEST(ExercisesText, TheSampleOptionsHelpLinesUpWithTheServersHelp) {
  const std::string text = read_file(source_dir + "/docs/EXERCISES.md");
  const std::size_t at = text.find(".help = ");
  ASSERT_NE(at, std::string::npos);
  std::string help;  // the C string literals after it, joined, with "\n" decoded
  const std::regex literal("^\\s*\"((?:[^\"\\\\]|\\\\.)*)\"");
  std::string rest = text.substr(at + 8);
  for (std::smatch part; std::regex_search(rest, part, literal); rest = part.suffix().str()) {
    help += std::regex_replace(part[1].str(), std::regex("\\\\n"), "\n");
  }
  const ExtraOptions extra{.options = {}, .synopsis = "", .help = help, .set = {}};
  const std::string usage = server_usage("server_epoll", {.max_questions = 10}, extra);
  const std::size_t seed_help = usage.find("make replies");  // where --seed's description starts
  const std::size_t column = seed_help - usage.rfind('\n', seed_help) - 1;
  for (const std::string& line : lines(help)) {
    const std::size_t gap = line.find("  ", 2);
    const std::size_t words = line.find_first_not_of(' ', gap == std::string::npos ? 0 : gap);
    if (gap != std::string::npos) {
      EXPECT_EQ(words, column) << "'" << line << "'\n" << usage;
    }
  }
  EXPECT_NE(help.find("--idle-timeout"), std::string::npos) << help;
}
