// bin/grade, graded: it passes this repository's servers and client, fails each server broken on
// purpose (tests/broken_server.cpp) on the one check that guards what is broken, prints the same
// report on every run, and writes JUnit XML that parses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <sstream>

#include "tests/support.hpp"

namespace {
const std::string bin = BIN_DIR;

// grade's own lines: each check's name and, for a FAIL, the rest of its line.
struct Graded {
  std::optional<int> exit_code;
  std::vector<std::string> passed;
  std::map<std::string, std::string> failed;
  std::string report;  // all of stdout
  std::string err;
};

Graded run_grade(const std::vector<std::string>& args,
                 std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  Child grade("grade", args);
  Graded result;
  result.exit_code = grade.wait_exit(timeout);
  result.report = grade.out();
  result.err = grade.err();
  for (const std::string& line : lines(result.report)) {
    if (line.starts_with("PASS ")) {
      result.passed.push_back(line.substr(5));
    } else if (line.starts_with("FAIL ")) {
      const std::size_t colon = line.find(": ");
      result.failed[line.substr(5, colon - 5)] =
          colon == std::string::npos ? "" : line.substr(colon + 2);
    }
  }
  return result;
}

// The reason on a check's FAIL line, or "<no FAIL line>".
std::string reason(const Graded& graded, const std::string& check) {
  const auto found = graded.failed.find(check);
  return found == graded.failed.end() ? "<no FAIL line>" : found->second;
}

std::vector<std::string> names(const std::map<std::string, std::string>& failed) {
  std::vector<std::string> result;
  for (const auto& [name, reason] : failed) result.push_back(name);
  return result;
}

const std::vector<std::string> server_checks = {"answers-the-three-questions",
                                                "question-in-pieces",
                                                "questions-in-one-packet",
                                                "survives-client-error",
                                                "survives-reset",
                                                "question-limit",
                                                "concurrency",
                                                "seeded-replies",
                                                "clean-shutdown"};

std::vector<std::string> grade_server_args(const std::string& pattern,
                                           const std::vector<std::string>& server) {
  std::vector<std::string> args = {"server", "--pattern", pattern, "--max-questions",
                                   "10",     "--seed",    "42"};
  if (pattern == "threads") args.insert(args.end(), {"--threads", "4"});
  args.emplace_back("--");
  args.insert(args.end(), server.begin(), server.end());
  args.insert(args.end(), {"{host}", "{port}", "--max-questions", "10", "--seed", "42"});
  return args;
}

const std::map<std::string, std::string> pattern_of = {
    {"server_simple", "simple"}, {"server_threads", "threads"}, {"server_epoll", "async"}};
}  // namespace

class GradeEachServer : public testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Patterns, GradeEachServer,
                         testing::Values("server_simple", "server_threads", "server_epoll"));

TEST_P(GradeEachServer, PassesEveryCheckWithItsOwnPattern) {
  const auto start = std::chrono::steady_clock::now();
  const Graded graded =
      run_grade(grade_server_args(pattern_of.at(GetParam()), {bin + "/" + GetParam()}));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(graded.exit_code, 0) << graded.report << graded.err;
  EXPECT_EQ(graded.passed, server_checks) << graded.report;
  EXPECT_TRUE(graded.failed.empty()) << graded.report;
  EXPECT_TRUE(graded.report.ends_with("\nscore 9/9\n")) << graded.report;
  // The bound for a whole run (it waits on replies, not on sleeps): generous slack.
  if (GetParam() == "server_epoll") {
    EXPECT_LT(took, std::chrono::seconds(10));
  }
}

// The lab's lesson, by behaviour alone: a wrong pattern fails, saying what the server did.
TEST(GradeServer, FailsConcurrencyForAWrongPatternSayingHowManyWereServed) {
  const struct {
    std::string server;
    std::string pattern;
    std::string reason;
  } cases[] = {
      {"server_simple", "async", "all 16 clients served at once (async); 1 client served at once"},
      {"server_epoll", "simple", "1 client served at once (simple); all 16 clients served at once"},
      {"server_threads", "simple", "1 client served at once (simple); 4 clients served at once"},
  };
  for (const auto& c : cases) {
    const Graded graded = run_grade(
        {"server", "--pattern", c.pattern, "--", bin + "/" + c.server, "{host}", "{port}"});
    EXPECT_EQ(graded.exit_code, 1) << c.server << "\n" << graded.report;
    EXPECT_EQ(names(graded.failed), std::vector<std::string>{"concurrency"}) << graded.report;
    EXPECT_EQ(reason(graded, "concurrency"), c.reason) << c.server;
  }
}

// Each broken server fails the check that guards what is broken, and no other.
class GradeBrokenServer : public testing::TestWithParam<std::pair<std::string, std::string>> {};
INSTANTIATE_TEST_SUITE_P(Breaks, GradeBrokenServer,
                         testing::Values(std::pair{"first-only", "questions-in-one-packet"},
                                         std::pair{"no-limit", "question-limit"},
                                         std::pair{"dies-on-error", "survives-client-error"},
                                         std::pair{"ignores-sigterm", "clean-shutdown"}),
                         [](const auto& info) {
                           std::string name = info.param.first;
                           std::erase(name, '-');
                           return name;
                         });

TEST_P(GradeBrokenServer, FailsTheOneCheckThatGuardsIt) {
  const auto& [broken, check] = GetParam();
  const Graded graded =
      run_grade({"server", "--max-questions", "5", "--seed", "7", "--", BROKEN_SERVER, broken,
                 "{host}", "{port}", "--max-questions", "5", "--seed", "7"});
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  EXPECT_EQ(names(graded.failed), std::vector<std::string>{check}) << graded.report;
  EXPECT_EQ(graded.passed.size(), 7U) << graded.report;
  EXPECT_TRUE(graded.report.ends_with("\nscore 7/8\n")) << graded.report;
}

TEST(GradeServer, SaysPlainlyWhenOnlyTheFirstQuestionOfAPacketIsAnswered) {
  const Graded graded =
      run_grade({"server", "--", BROKEN_SERVER, "first-only", "{host}", "{port}"});
  EXPECT_EQ(reason(graded, "questions-in-one-packet"),
            "3 replies, in order, to 3 questions sent in one packet; only the first of 3 questions "
            "in one packet was answered");
}

TEST(GradeServer, SaysHowManyRepliesCameWhenTheLimitIsIgnored) {
  const Graded graded = run_grade({"server", "--max-questions", "5", "--", BROKEN_SERVER,
                                   "no-limit", "{host}", "{port}", "--max-questions", "5"});
  EXPECT_EQ(reason(graded, "question-limit"),
            "5 replies to 8 questions, then the end of the stream; 8 replies to 8 questions");
}

// A server that answers no one fails every probe, the first too, which would read as one client
// served at once: it must fail concurrency for every pattern, simple included, saying why.
TEST(GradeServer, FailsConcurrencyForAServerThatAnswersNoOne) {
  for (const std::string pattern : {"simple", "async"}) {
    const Graded graded = run_grade({"server", "--pattern", pattern, "--", BROKEN_SERVER,
                                     "closes-at-once", "{host}", "{port}"});
    EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
    EXPECT_TRUE(reason(graded, "concurrency")
                    .ends_with("; no client served, not even one alone: to 'Will I be happy "
                               "tomorrow?' no reply came: "
                               "the connection closed"))
        << pattern << "\n"
        << graded.report;
  }
}

// How a close shows on grade's send (EPIPE or ECONNRESET) depends on timing; the report does not.
TEST(GradeServer, SaysTheSameWhicheverWayAServerClosedMidQuestion) {
  const Graded graded =
      run_grade({"server", "--", BROKEN_SERVER, "closes-at-once", "{host}", "{port}"});
  EXPECT_EQ(reason(graded, "question-in-pieces"),
            "one reply to a question sent a few bytes at a time; the connection closed before the "
            "whole question was sent")
      << graded.report;
}

// A server that dies is started again for the next checks; its check says how it ended, which,
// unlike how the next connection failed, is the same on every run.
TEST(GradeServer, SaysTheServerEndedAndGoesOnWithTheNextChecks) {
  const Graded graded =
      run_grade({"server", "--", BROKEN_SERVER, "dies-on-error", "{host}", "{port}"});
  EXPECT_EQ(reason(graded, "survives-client-error"),
            "a new client answered after one sent a question without its '?' and closed; the "
            "server ended (exit status 1)");
  EXPECT_NE(graded.err.find("grade: the server ended (exit status 1) during survives-client-error; "
                            "starting it again for the next checks\n"),
            std::string::npos)
      << graded.err;
  EXPECT_EQ(graded.passed.size(), 5U) << graded.report;
}

// The lab's own Python server (tests/lab_server.py, from the lab's text): its recv_upto keeps
// nothing after the first '?'.
TEST(GradeServer, FailsTheLabsPythonServerOnQuestionsInOnePacketOnly) {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const Graded graded =
      run_grade({"server", "--pattern", "simple", "--", "python3",
                 std::string(SOURCE_DIR) + "/tests/lab_server.py", "{host}", "{port}"});
  EXPECT_EQ(graded.exit_code, 1) << graded.report << graded.err;
  EXPECT_EQ(names(graded.failed), std::vector<std::string>{"questions-in-one-packet"})
      << graded.report << graded.err;
  EXPECT_NE(reason(graded, "questions-in-one-packet")
                .find("only the first of 3 questions in one packet was answered"),
            std::string::npos);
}

// A grading script diffs the report against an expected one: two runs, byte for byte, against
// one running server (HOST PORT) and against servers grade starts, passing and failing.
TEST(GradeServer, TwoRunsPrintTheSameReportByteForByte) {
  const Server server("server_epoll", {"--seed", "42"});
  const std::vector<std::string> args = {"server",   "--pattern", "async", "--max-questions",
                                         "10",       "--seed",    "42",    "127.0.0.1",
                                         server.port};
  const Graded first = run_grade(args);
  const Graded second = run_grade(args);
  EXPECT_EQ(first.exit_code, 0) << first.report;
  EXPECT_EQ(first.report, second.report);
  EXPECT_EQ(first.report.find(server.port), std::string::npos) << "a port in the report";

  for (const std::vector<std::string>& started :
       {grade_server_args("threads", {bin + "/server_threads"}),
        std::vector<std::string>{"server", "--pattern", "async", "--", BROKEN_SERVER,
                                 "dies-on-error", "{host}", "{port}"}}) {
    const Graded one = run_grade(started);
    const Graded two = run_grade(started);
    EXPECT_EQ(one.report, two.report);
    EXPECT_FALSE(one.report.empty());
  }
}

// grade's --help, and the usage errors and a grading that cannot run: exit status 2.
TEST(GradeServer, ExitsTwoWhenGradingCannotRun) {
  Child help("grade", {"--help"});
  EXPECT_EQ(help.wait_exit(), 0);
  EXPECT_TRUE(help.out().starts_with("usage: grade server")) << help.out();

  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"server"},
           {"server", "--pattern", "fast", "127.0.0.1", "1"},
           {"client", "127.0.0.1", "1"},
           {"client", "--delay", "1", "--", "true"},
           {"server", "--pattern", "threads", "--probe", "4", "--", "true"}}) {
    Child grade("grade", args);
    EXPECT_EQ(grade.wait_exit(), 2) << testing::PrintToString(args);
    EXPECT_EQ(grade.out(), "");
    EXPECT_TRUE(grade.err().starts_with("grade: ")) << grade.err();
    EXPECT_NE(grade.err().find("\nusage: grade"), std::string::npos) << grade.err();
  }

  const Graded never_up = run_grade({"server", "--", "false"});
  EXPECT_EQ(never_up.exit_code, 2);
  EXPECT_EQ(never_up.err,
            "grade: the server ended (exit status 1) before it accepted connections\n");
  const Graded cannot_start = run_grade({"server", "--", "/nonexistent/server", "{port}"});
  EXPECT_EQ(cannot_start.exit_code, 2);
  EXPECT_EQ(cannot_start.err,
            "grade: cannot start '/nonexistent/server': No such file or directory\n");
  const Graded nobody_there = run_grade({"server", "127.0.0.1", "1"});
  EXPECT_EQ(nobody_there.exit_code, 2);
  EXPECT_EQ(nobody_there.err, "grade: no server accepts connections at 127.0.0.1:1\n");
  const Graded client_cannot_start = run_grade({"client", "--", "/nonexistent/client"});
  EXPECT_EQ(client_cannot_start.exit_code, 2);
}

TEST(GradeClient, PassesClientQuestionsInEachMode) {
  const std::string client = bin + "/client_questions";
  const struct {
    std::vector<std::string> grade;
    std::vector<std::string> client;
    std::vector<std::string> checks;
  } modes[] = {
      {{}, {}, {"asks-the-three-questions", "prints-each-reply", "exits-zero"}},
      {{"--error"}, {"-e"}, {"sends-a-question-without-its-mark-then-closes"}},
      {{"--cycle", "--delay", "0.3"},
       {"--cycle", "--delay", "0.3"},
       {"cycles-through-the-questions", "waits-before-each-question",
        "stops-when-the-server-closes"}},
  };
  for (const auto& mode : modes) {
    std::vector<std::string> args = {"client"};
    args.insert(args.end(), mode.grade.begin(), mode.grade.end());
    args.insert(args.end(), {"--", client, "{host}", "{port}"});
    args.insert(args.end(), mode.client.begin(), mode.client.end());
    const Graded graded = run_grade(args);
    EXPECT_EQ(graded.exit_code, 0) << graded.report << graded.err;
    EXPECT_EQ(graded.passed, mode.checks) << graded.report;
    EXPECT_TRUE(graded.failed.empty()) << graded.report;
  }
}

TEST(GradeClient, FailsAClientThatDoesNotWaitAsLongAsItShould) {
  const Graded graded =
      run_grade({"client", "--cycle", "--delay", "1", "--", bin + "/client_questions", "{host}",
                 "{port}", "--cycle", "--delay", "0.3"});
  EXPECT_EQ(graded.exit_code, 1);
  EXPECT_EQ(names(graded.failed), std::vector<std::string>{"waits-before-each-question"})
      << graded.report;
  EXPECT_EQ(reason(graded, "waits-before-each-question"),
            "1 s (within 25%) before each question; question 1 came less than 0.75 s after the "
            "connection");
}

TEST(GradeClient, FailsAClientThatPrintsNothing) {
  const Graded graded =
      run_grade({"client", "--", "sh", "-c", "exec \"$0\" \"$1\" \"$2\" >/dev/null",
                 bin + "/client_questions", "{host}", "{port}"});
  EXPECT_EQ(graded.exit_code, 1);
  EXPECT_EQ(names(graded.failed), std::vector<std::string>{"prints-each-reply"}) << graded.report;
  EXPECT_EQ(reason(graded, "prints-each-reply"),
            "each reply grade sent on a line of its own, nothing else; it printed nothing");
}

// A small XML reader, enough to prove the JUnit file well-formed: elements, attributes in
// quotes, the five entities, nothing else. It throws on anything malformed.
namespace {
struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::vector<Element> children;
};

class XmlReader {
 public:
  explicit XmlReader(std::string text) : text_(std::move(text)) {}

  Element document() {
    if (text_.starts_with("<?xml")) at_ = text_.find("?>") + 2;
    skip_space();
    Element root = element();
    skip_space();
    if (at_ != text_.size()) fail("text after the root element");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(what + " at byte " + std::to_string(at_));
  }
  void skip_space() {
    while (at_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[at_]))) ++at_;
  }
  void expect(char c) {
    if (at_ >= text_.size() || text_[at_] != c) fail(std::string("expected '") + c + "'");
    ++at_;
  }
  std::string name() {
    const std::size_t start = at_;
    while (at_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[at_])) ||
                                  text_[at_] == '-' || text_[at_] == '_' || text_[at_] == '.')) {
      ++at_;
    }
    if (at_ == start) fail("expected a name");
    return text_.substr(start, at_ - start);
  }
  std::string value() {
    expect('"');
    std::string out;
    while (at_ < text_.size() && text_[at_] != '"') {
      if (text_[at_] == '<') fail("'<' in an attribute");
      if (text_[at_] == '&') {
        static const std::map<std::string, char> entities = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        const std::size_t end = text_.find(';', at_);
        const auto entity = entities.find(text_.substr(at_, end - at_ + 1));
        if (end == std::string::npos || entity == entities.end()) fail("a bad entity");
        out += entity->second;
        at_ = end + 1;
      } else {
        out += text_[at_++];
      }
    }
    expect('"');
    return out;
  }
  Element element() {
    Element e;
    expect('<');
    e.name = name();
    while (true) {
      skip_space();
      if (at_ < text_.size() && (text_[at_] == '/' || text_[at_] == '>')) break;
      const std::string key = name();
      expect('=');
      if (!e.attributes.emplace(key, value()).second) fail("a repeated attribute");
    }
    if (text_[at_] == '/') {
      ++at_;
      expect('>');
      return e;
    }
    expect('>');
    while (true) {
      skip_space();
      if (text_.compare(at_, 2, "</") == 0) break;
      e.children.push_back(element());
    }
    at_ += 2;
    if (name() != e.name) fail("a closing tag that does not match <" + e.name + ">");
    expect('>');
    return e;
  }

  std::string text_;
  std::size_t at_ = 0;
};
}  // namespace

// Runs grade with --junit and returns the file's root element, parsed (or a parse error).
Element graded_junit(std::vector<std::string> args, Graded& graded) {
  const std::string file = testing::TempDir() + "grade-junit-" + std::to_string(getpid()) + ".xml";
  args.insert(args.begin() + 1, {"--junit", file});
  graded = run_grade(args);
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  std::filesystem::remove(file);
  return XmlReader(text.str()).document();
}

TEST(GradeJUnit, OneTestCasePerCheckAndEachFailureWithItsReason) {
  Graded graded;
  Element suite;
  ASSERT_NO_THROW(suite = graded_junit({"server", "--max-questions", "5", "--", BROKEN_SERVER,
                                        "no-limit", "{host}", "{port}", "--max-questions", "5"},
                                       graded));
  EXPECT_EQ(suite.name, "testsuite");
  EXPECT_EQ(suite.attributes["tests"], "7");
  EXPECT_EQ(suite.attributes["failures"], "1");
  ASSERT_FALSE(suite.children.empty());
  EXPECT_EQ(suite.children[0].name, "properties");  // the score, in points
  std::vector<std::string> cases;
  for (Element& testcase : std::span(suite.children).subspan(1)) {
    EXPECT_EQ(testcase.name, "testcase");
    cases.push_back(testcase.attributes["name"]);
    if (testcase.children.empty()) continue;
    ASSERT_EQ(testcase.children.size(), 1U);
    EXPECT_EQ(testcase.children[0].name, "failure");
    EXPECT_EQ(testcase.children[0].attributes["message"], reason(graded, cases.back()));
  }
  std::vector<std::string> reported = graded.passed;
  reported.insert(reported.begin() + 5, "question-limit");
  EXPECT_EQ(cases, reported);
}

// What a program sent goes into the file: XML's special characters must come out as they went in.
TEST(GradeJUnit, AFailureQuotingXmlsSpecialCharactersParses) {
  Graded graded;
  Element suite;
  ASSERT_NO_THROW(suite = graded_junit({"client", "--error", "--", "bash", "-c",
                                        "printf '%s' '<a href=\"x\">&amp;'\\''?' >/dev/tcp/$0/$1",
                                        "{host}", "{port}"},
                                       graded));
  ASSERT_EQ(suite.children.size(), 2U);
  ASSERT_EQ(suite.children[1].children.size(), 1U);
  const std::string message = suite.children[1].children[0].attributes["message"];
  EXPECT_NE(message.find("it sent '<a href=\"x\">&amp;'?'"), std::string::npos) << message;
  EXPECT_EQ(message, reason(graded, "sends-a-question-without-its-mark-then-closes"));
}
