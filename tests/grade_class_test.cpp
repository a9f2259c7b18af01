// bin/grade's results where graders read them: --points in every format, Gradescope's
// results.json, the run_autograder of docs/GRADING.md as Gradescope runs it, and a class graded
// by scripts/grade_class.sh (make grade-class), N at once as one at a time.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/support.hpp"

namespace fs = std::filesystem;

namespace {
const std::string source = SOURCE_DIR;

bool have_python() { return std::system("command -v python3 >/dev/null 2>&1") == 0; }

// A directory of its own under the test's temporary directory, removed at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(fs::path(testing::TempDir()) / ("sphinx-" + name + "-" + std::to_string(getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// The tests of a results.json, one a line as grade writes them: name, score, max_score, status.
std::vector<std::string> gradescope_tests(const std::string& json) {
  std::vector<std::string> tests;
  const std::regex test(
      R"re(\{"name": "([^"]*)", "score": ([0-9]+), "max_score": ([0-9]+), "status": "(passed|failed)", "output": ")re");
  for (const std::string& line : lines(json)) {
    std::smatch match;
    if (std::regex_search(line, match, test)) {
      tests.push_back(match[1].str() + " " + match[2].str() + "/" + match[3].str() + " " +
                      match[4].str());
    }
  }
  return tests;
}

// The lines of a fenced block of docs/GRADING.md that starts with `first_line`.
std::string block_in_grading_docs(const std::string& first_line) {
  const std::string docs = read_file(source + "/docs/GRADING.md");
  const std::size_t start = docs.find("```sh\n" + first_line);
  if (start == std::string::npos) return "";
  const std::size_t body = start + 6;
  return docs.substr(body, docs.find("```\n", body) - body);
}
}  // namespace

// --points weighs the score line, JUnit's properties and Gradescope's tests alike.
TEST(GradePoints, WeighTheScoreInEveryFormat) {
  const TempDir dir("points");
  const std::string junit = (dir.path() / "junit.xml").string();
  const std::string json = (dir.path() / "results.json").string();
  Child grade("grade",
              {"server", "--max-questions", "5", "--points", "question-limit=4,clean-shutdown=0",
               "--junit", junit, "--gradescope", json, "--", BROKEN_SERVER, "no-limit", "{host}",
               "{port}", "--max-questions", "5"});
  EXPECT_EQ(grade.wait_exit(30s), 1) << grade.out() << grade.err();
  EXPECT_TRUE(
      grade.out().ends_with("\nFAIL question-limit: 5 replies to 8 questions, then the end "
                            "of the stream; 8 replies to 8 questions\nPASS "
                            "clean-shutdown\nscore 5/9\n"))
      << grade.out();
  const std::string xml = read_file(junit);
  EXPECT_NE(xml.find("<property name=\"score\" value=\"5\"/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<property name=\"max_score\" value=\"9\"/>"), std::string::npos) << xml;
  const std::string results = read_file(json);
  EXPECT_TRUE(results.starts_with("{\n  \"score\": 5,\n  \"execution_time\": ")) << results;
  EXPECT_EQ(
      gradescope_tests(results),
      (std::vector<std::string>{
          "answers-the-three-questions 1/1 passed", "question-in-pieces 1/1 passed",
          "questions-in-one-packet 1/1 passed", "survives-client-error 1/1 passed",
          "survives-reset 1/1 passed", "question-limit 0/4 failed", "clean-shutdown 0/0 passed"}))
      << results;
  EXPECT_NE(results.find("\"output\": \"5 replies to 8 questions, then the end of the stream; 8 "
                         "replies to 8 questions\"}"),
            std::string::npos)
      << results;

  Child typo("grade", {"server", "--points", "clean-shutdwn=2", "127.0.0.1", "1"});
  EXPECT_EQ(typo.wait_exit(), 2);
  EXPECT_TRUE(typo.err().starts_with(
      "grade: --points takes CHECK=N,..., with a check grade has, not 'clean-shutdwn=2'\n"))
      << typo.err();
}

// Grading that cannot run still leaves Gradescope a results.json saying why, with a score of 0.
TEST(GradeGradescope, SaysWhyWhenGradingCannotRun) {
  const TempDir dir("gradescope");
  const std::string json = (dir.path() / "results.json").string();
  Child grade("grade", {"server", "--gradescope", json, "--", "false"});
  EXPECT_EQ(grade.wait_exit(), 2);
  EXPECT_EQ(read_file(json).substr(read_file(json).find("\"output\"")),
            "\"output\": \"grade could not run: the server ended (exit status 1) before it "
            "accepted connections\",\n  \"tests\": [\n  ]\n}\n");
}

// docs/GRADING.md's run_autograder, run as Gradescope runs it: the student's files in
// submission/, this repository built in source/, the results in results/results.json.
TEST(GradeGradescope, TheDocsRunAutograderGradesASubmission) {
  if (!have_python()) GTEST_SKIP() << "no python3";
  const std::string script = block_in_grading_docs("#!/usr/bin/env bash\n# run_autograder:");
  ASSERT_FALSE(script.empty()) << "no run_autograder block in docs/GRADING.md";
  const TempDir root("autograder");
  write_file(root.path() / "run_autograder", script);
  fs::create_directories(root.path() / "source/bin");
  fs::create_symlink(std::string(BIN_DIR) + "/grade", root.path() / "source/bin/grade");
  fs::create_directories(root.path() / "results");
  fs::create_directories(root.path() / "submission");
  fs::copy_file(source + "/tests/lab_server.py", root.path() / "submission/server_asyncio.py",
                fs::copy_options::none);
  Child run("/usr/bin/env", {"AUTOGRADER_ROOT=" + root.path().string(), "bash",
                             (root.path() / "run_autograder").string()});
  EXPECT_EQ(run.wait_exit(60s), 0) << run.out() << run.err();
  const std::string results = read_file((root.path() / "results/results.json").string());
  // The lab's Python server: simple, no question limit, one reply per packet.
  EXPECT_EQ(gradescope_tests(results),
            (std::vector<std::string>{
                "answers-the-three-questions 1/1 passed", "question-in-pieces 1/1 passed",
                "questions-in-one-packet 0/1 failed", "survives-client-error 1/1 passed",
                "survives-reset 1/1 passed", "question-limit 0/1 failed", "concurrency 0/4 failed",
                "clean-shutdown 1/1 passed"}))
      << results << run.err();
  EXPECT_TRUE(results.starts_with("{\n  \"score\": 5,\n")) << results;
}

// make grade-class: a class of four, graded one at a time and three at a time: the same reports
// and the same gradebook, byte for byte.
TEST(GradeClass, ThreeAtOnceGiveTheReportsOneAtATimeGives) {
  if (!have_python()) GTEST_SKIP() << "no python3";
  const TempDir dir("grade-class");
  const fs::path submissions = dir.path() / "submissions";
  const std::string misbehaving = source + "/tests/misbehaving_server.py";
  const auto student = [&](const std::string& name, const std::string& kind) {
    write_file(submissions / name / "server.py", "import runpy, sys\nsys.argv[1:1] = ['" + kind +
                                                     "']\nrunpy.run_path('" + misbehaving +
                                                     "', run_name='__main__')\n");
  };
  student("ada", "well");
  student("bo", "daemonizes");
  student("cy", "exits-at-once");
  fs::create_directories(submissions / "di");
  fs::copy_file(source + "/tests/lab_server.py", submissions / "di/server.py");

  const auto grade_class = [&](const std::string& jobs) {
    std::string results = (dir.path() / ("results-" + jobs)).string();
    Child run("/bin/bash", {source + "/scripts/grade_class.sh", std::string(BIN_DIR) + "/grade",
                            submissions.string(), jobs, results, "--max-questions 3",
                            "python3 server.py {host} {port} " + dir.path().string()});
    EXPECT_EQ(run.wait_exit(120s), 0) << run.out() << run.err();
    EXPECT_TRUE(run.err().starts_with("4 students graded, " + jobs + " at a time, in "))
        << run.err();
    return results;
  };
  const std::string one = grade_class("1");
  const std::string three = grade_class("3");

  const std::string gradebook = read_file(one + "/gradebook.csv");
  EXPECT_EQ(gradebook,
            "student,answers-the-three-questions,question-in-pieces,questions-in-one-packet,"
            "survives-client-error,survives-reset,question-limit,clean-shutdown,score,max_score,"
            "note\n"
            "\"ada\",1,1,1,1,1,0,1,6,7,\"\"\n"
            "\"bo\",1,1,1,1,1,0,1,6,7,\"\"\n"
            "\"cy\",,,,,,,,0,0,\"could not grade: grade: the server ended (exit status 3) before "
            "it accepted connections\"\n"
            "\"di\",1,1,0,1,1,0,1,5,7,\"\"\n");
  EXPECT_EQ(read_file(three + "/gradebook.csv"), gradebook);
  for (const std::string file :
       {"ada.txt", "ada.err", "bo.txt", "bo.err", "cy.txt", "cy.err", "di.txt", "di.err"}) {
    EXPECT_EQ(read_file(fs::path(three) / file), read_file(fs::path(one) / file)) << file;
  }
  EXPECT_NE(read_file(one + "/ada.txt").find("PASS answers-the-three-questions\n"),
            std::string::npos);
  // The daemon and the child cy's server leaves are gone with their grading.
  const std::vector<pid_t> left = processes_with(dir.path().string());
  EXPECT_TRUE(left.empty()) << left.size() << " processes left";
  for (const pid_t pid : left) kill(pid, SIGKILL);
}
