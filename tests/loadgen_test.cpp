// bench/loadgen checks every reply: a right one counts, a wrong or cut one is an error. Its
// numbers are measured by make bench, never asserted here.
#include <gtest/gtest.h>

#include <optional>

#include "common/net.hpp"
#include "tests/support.hpp"

namespace {
// A field of loadgen's --json output as its text, or nullopt if it is not there: a test of a
// field that went missing fails instead of comparing "<missing>" with a number.
std::optional<std::string> field(const std::string& json, const std::string& name) {
  const std::size_t at = json.find("\"" + name + "\": ");
  if (at == std::string::npos) return std::nullopt;
  const std::size_t start = at + name.size() + 4;
  return json.substr(start, json.find_first_of(",}", start) - start);
}

// A field that must be there and more than zero.
bool positive(const std::string& json, const std::string& name) {
  const std::optional<std::string> text = field(json, name);
  return text && !text->empty() && text->find_first_not_of("0123456789.") == std::string::npos &&
         std::stod(*text) > 0;
}
}  // namespace

TEST(Loadgen, CountsRightRepliesAndNoErrorsAgainstARealServer) {
  Server server("server_epoll", {"--max-questions", "10"});
  Child load("loadgen", {"127.0.0.1", server.port, "--connections", "4", "--seconds", "0.3",
                         "--warmup", "0.1", "--json"});
  EXPECT_EQ(load.wait_exit(), 0) << load.err();
  const std::string json = load.out();
  EXPECT_TRUE(positive(json, "answered")) << json;
  EXPECT_EQ(field(json, "errors"), "0") << json;
  EXPECT_EQ(field(json, "served"), "4") << json;
  EXPECT_TRUE(positive(json, "reconnects")) << json;  // the limit of 10 closed connections
}

TEST(Loadgen, CountsAWrongReplyAsAnErrorNotASuccess) {
  const Fd listener = get_server_socket("127.0.0.1", "0");  // a fake server, played by the test
  const std::string port = local_address(listener.get()).substr(10);
  Child load("loadgen", {"127.0.0.1", port, "--connections", "1", "--seconds", "0.3", "--warmup",
                         "0", "--json"});
  const Fd sock = accept_within(listener.get());
  Framer buffer(MAX_QUESTION, "question");
  const std::optional<std::string> question = recv_upto(sock.get(), buffer, '?');
  ASSERT_TRUE(question);
  send_all(sock.get(), *question + " Perhaps.");  // not one of the five
  EXPECT_EQ(load.wait_exit(), 0) << load.err();
  EXPECT_EQ(field(load.out(), "answered"), "0") << load.out();
  EXPECT_EQ(field(load.out(), "errors"), "1") << load.out();
}

// What each client felt: a connection never answered counts at its age when loadgen stops (here
// the whole 0.3 s window, since there is no warm-up), marked as a lower bound.
TEST(Loadgen, CountsAConnectionNeverAnsweredAtTheWindowAsALowerBound) {
  // A server that never replies: a listening socket the test never accepts on. The kernel
  // completes the connections in its backlog, and the questions wait there unread.
  const Fd listener = get_server_socket("127.0.0.1", "0");
  const std::string port = local_address(listener.get()).substr(10);
  Child load("loadgen", {"127.0.0.1", port, "--connections", "3", "--seconds", "0.3", "--warmup",
                         "0", "--json"});
  EXPECT_EQ(load.wait_exit(), 0) << load.err();
  const std::string json = load.out();
  EXPECT_EQ(field(json, "first_reply_connections"), "3") << json;
  EXPECT_EQ(field(json, "never_answered"), "3") << json;
  for (const std::string p : {"p50", "p99", "max"}) {
    EXPECT_GE(std::stod(field(json, "first_reply_" + p + "_ms").value_or("0")), 300.0) << json;
    EXPECT_EQ(field(json, "first_reply_" + p + "_at_least"), "true") << json;
  }
}

TEST(Loadgen, ConnectionsAllAnsweredGiveExactWaits) {
  Server server("server_epoll", {"--max-questions", "0"});
  Child load("loadgen", {"127.0.0.1", server.port, "--connections", "4", "--seconds", "0.3",
                         "--warmup", "0.1", "--json"});
  EXPECT_EQ(load.wait_exit(), 0) << load.err();
  const std::string json = load.out();
  EXPECT_EQ(field(json, "first_reply_connections"), "4") << json;
  EXPECT_EQ(field(json, "never_answered"), "0") << json;
  EXPECT_EQ(field(json, "first_reply_p99_at_least"), "false") << json;
  EXPECT_EQ(field(json, "first_reply_max_at_least"), "false") << json;
}

TEST(Loadgen, BadCommandLinesExitTwo) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"127.0.0.1"}, {"127.0.0.1", "1", "--connections", "0"}, {"127.0.0.1", "1", "--x"}}) {
    Child load("loadgen", args);
    EXPECT_EQ(load.wait_exit(), 2);
    EXPECT_TRUE(starts_with(load.err(), "loadgen: ")) << load.err();
  }
}
