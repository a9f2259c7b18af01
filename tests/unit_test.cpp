// Unit tests of the helpers in common/: framing, recv_upto, replies, seeding, escaping,
// addresses and the command-line parser.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"
#include "tests/support.hpp"

namespace {
// Two connected sockets whose reads and writes give up after 2 s: a helper that waits for more
// than it should fails its test with EAGAIN instead of hanging the suite.
struct SocketPair {
  Fd a, b;
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
    set_timeouts(a.get(), 2s);
    set_timeouts(b.get(), 2s);
  }
};

std::vector<std::string> all_questions(Framer& framer) {
  std::vector<std::string> result;
  while (auto question = framer.next('?')) result.emplace_back(*question);
  return result;
}
}  // namespace

TEST(Framer, CutsSeveralQuestionsFromOneChunkAndKeepsTheRest) {
  Framer framer(MAX_QUESTION, "question");
  framer.append("One?Two?Thr");
  EXPECT_EQ(all_questions(framer), (std::vector<std::string>{"One?", "Two?"}));
  EXPECT_EQ(framer.pending(), "Thr");
  framer.append("ee?");
  EXPECT_EQ(all_questions(framer), (std::vector<std::string>{"Three?"}));
  EXPECT_EQ(framer.pending(), "");
}

TEST(Framer, AcceptsExactlyTheMaximumAndRejectsOneByteMore) {
  Framer framer(MAX_QUESTION, "question");
  const std::string longest = std::string(MAX_QUESTION - 1, 'a') + "?";
  framer.append(longest);
  EXPECT_EQ(framer.next('?'), longest);

  framer.append(std::string(MAX_QUESTION - 1, 'b'));
  EXPECT_EQ(framer.next('?'), std::nullopt);  // 4095 bytes: still waiting
  framer.append("b");
  EXPECT_THROW(framer.next('?'), std::length_error);
}

TEST(Framer, RejectsADelimiterThatComesTooLate) {
  Framer framer(8, "question");
  framer.append("123456789?");
  EXPECT_THROW(framer.next('?'), std::length_error);
}

TEST(Framer, SkipsDelimitersBeforeFrom) {
  Framer framer(MAX_REPLY, "reply");
  framer.append("Is 1.5 a lot? No.");
  EXPECT_EQ(framer.next('.', std::string_view("Is 1.5 a lot?").size()), "Is 1.5 a lot? No.");
}

TEST(RecvUpto, ReassemblesAQuestionSentOneByteAtATime) {
  SocketPair pair;
  const std::string question = "Will I be happy tomorrow?";
  const std::jthread writer([&] {  // joined however the test ends
    for (const char c : question) send(pair.a.get(), &c, 1, MSG_NOSIGNAL);
  });
  Framer buffer(MAX_QUESTION, "question");
  EXPECT_EQ(recv_upto(pair.b.get(), buffer, '?'), question);
}

TEST(RecvUpto, KeepsTheQuestionsThatCameInTheSameWrite) {
  SocketPair pair;
  send_all(pair.a.get(), "A?B?C?");
  pair.a.reset();
  Framer buffer(MAX_QUESTION, "question");
  EXPECT_EQ(recv_upto(pair.b.get(), buffer, '?'), "A?");
  EXPECT_EQ(recv_upto(pair.b.get(), buffer, '?'), "B?");
  EXPECT_EQ(recv_upto(pair.b.get(), buffer, '?'), "C?");
  EXPECT_EQ(recv_upto(pair.b.get(), buffer, '?'), std::nullopt);  // closed between questions
}

TEST(RecvUpto, PassesBinaryAndNulBytesThrough) {
  SocketPair pair;
  const std::string question("\0\x01\xff bin\n\0?", 10);
  send_all(pair.a.get(), question);
  Framer buffer(MAX_QUESTION, "question");
  EXPECT_EQ(recv_upto(pair.b.get(), buffer, '?'), question);
}

TEST(RecvUpto, ReportsAPeerThatClosesMidQuestion) {
  SocketPair pair;
  send_all(pair.a.get(), "Will I\x1b");
  pair.a.reset();
  Framer buffer(MAX_QUESTION, "question");
  try {
    recv_upto(pair.b.get(), buffer, '?');
    FAIL() << "no error";
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "received 'Will I\\x1b' then socket closed");
  }
}

TEST(RecvUpto, StopsAtTheMaximumWithoutWaitingForMore) {
  SocketPair pair;
  send_all(pair.a.get(), std::string(MAX_QUESTION + 1, 'x'));  // and the peer stays open
  Framer buffer(MAX_QUESTION, "question");
  try {
    recv_upto(pair.b.get(), buffer, '?');
    FAIL() << "no error";
  } catch (const std::length_error& error) {
    EXPECT_STREQ(error.what(), "question longer than 4096 bytes");
  }
}

TEST(MakeReply, IsTheQuestionASpaceAndAStockReply) {
  std::mt19937 gen = make_generator(std::nullopt);
  std::string reply;
  make_reply("Is there true free will?", gen, reply);
  const std::string prefix = "Is there true free will? ";
  ASSERT_EQ(reply.rfind(prefix, 0), 0U);
  EXPECT_NE(std::find(replies.begin(), replies.end(), reply.substr(prefix.size())), replies.end());
}

TEST(MakeReply, Seed42GivesTheGoldenSequence) {
  // Pinned: a change to the generator or to how a reply is picked changes every transcript.
  const std::vector<std::string> golden = {"Maybe.",       "Maybe.",     "Very likely.", "No.",
                                           "Very likely.", "Yes.",       "Yes.",         "No.",
                                           "Yes.",         "Not likely."};
  std::mt19937 gen = make_generator(42);
  std::vector<std::string> got;
  for (int i = 0; i < 10; ++i) {
    std::string reply;
    make_reply("?", gen, reply);
    got.push_back(reply.substr(2));
  }
  EXPECT_EQ(got, golden);
}

TEST(ReplySequence, IsTheSeedsSequenceOnEveryConnectionPastTheSharedTable) {
  // Two connections side by side, one of them far ahead: each k-th reply is replies[x_k % 5],
  // through the shared table and past it, on the generator of its own.
  std::mt19937 gen = make_generator(42);
  std::vector<std::string_view> expected;
  for (std::size_t k = 0; k < SHARED_REPLIES + 1000; ++k) expected.push_back(replies[gen() % 5]);
  ReplySequence ahead(42);
  ReplySequence behind(42);
  std::size_t wrong = 0;
  for (std::size_t k = 0; k < expected.size(); ++k) {
    wrong += ahead.next() != expected[k];
    if (k % 2 == 0) wrong += behind.next() != expected[k / 2];
  }
  EXPECT_EQ(wrong, 0U);
  ReplySequence other_seed(7);  // a table of its own
  std::mt19937 gen7 = make_generator(7);
  for (int k = 0; k < 100; ++k) wrong += other_seed.next() != replies[gen7() % 5];
  EXPECT_EQ(wrong, 0U);
}

TEST(MakeReply, DifferentSeedsGiveDifferentSequences) {
  std::mt19937 a = make_generator(1);
  std::mt19937 b = make_generator(2);
  std::string from_a;
  std::string from_b;
  for (int i = 0; i < 20; ++i) {
    make_reply("?", a, from_a);
    make_reply("?", b, from_b);
  }
  EXPECT_NE(from_a, from_b);
}

TEST(Escape, LeavesPrintableTextAndEscapesTheRest) {
  EXPECT_EQ(escape("Will I be happy tomorrow?"), "Will I be happy tomorrow?");
  EXPECT_EQ(escape(std::string("evil\x1b[2J\0", 9)), "evil\\x1b[2J\\x00");
  EXPECT_EQ(escape("a\\b\n\x7f\xff"), "a\\\\b\\x0a\\x7f\\xff");
}

TEST(Address, PrintsIpv4AsHostColonPort) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(51234);
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  EXPECT_EQ(format_address(reinterpret_cast<sockaddr*>(&address)), "127.0.0.1:51234");
}

TEST(Address, PrintsIpv6InBrackets) {
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  address.sin6_port = htons(1234);
  inet_pton(AF_INET6, "::1", &address.sin6_addr);
  EXPECT_EQ(format_address(reinterpret_cast<sockaddr*>(&address)), "[::1]:1234");
  EXPECT_EQ(format_address("::1", "80"), "[::1]:80");
  EXPECT_EQ(format_address("localhost", "80"), "localhost:80");
}

namespace {
// A command line as main receives it: argv[0] the program's name, then `args`.
class CommandLine {
 public:
  CommandLine(const std::vector<std::string_view>& args) : words_{"program"} {
    words_.insert(words_.end(), args.begin(), args.end());
    for (std::string& word : words_) pointers_.push_back(word.data());
    pointers_.push_back(nullptr);
  }
  [[nodiscard]] int argc() const { return static_cast<int>(words_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> words_;
  std::vector<char*> pointers_;
};

// Parses a command line as server_threads does (throwing UsageError instead of exiting).
std::optional<ServerOptions> read_server(const std::vector<std::string_view>& args,
                                         const ServerOptions& defaults = {.threads = 4}) {
  CommandLine line(args);
  return read_server_options(line.argc(), line.argv(), defaults);
}

ServerOptions parse_server(const std::vector<std::string_view>& args) {
  const std::optional<ServerOptions> options = read_server(args);
  EXPECT_TRUE(options.has_value());
  return options.value_or(ServerOptions{});
}

std::string usage_error(const std::vector<std::string_view>& args) {
  try {
    parse_server(args);
  } catch (const UsageError& error) {
    return error.what();
  }
  return "no error";
}
}  // namespace

TEST(Args, DefaultsAreTheLabs) {
  const ServerOptions options = parse_server({});
  EXPECT_EQ(options.host, "127.0.0.1");
  EXPECT_EQ(options.port, "1234");
  EXPECT_EQ(options.seed, std::nullopt);
  EXPECT_EQ(options.max_questions, 0U);
  EXPECT_EQ(options.threads, 4U);
}

TEST(Args, TakesOptionsBeforeAndAfterHostAndPort) {
  const ServerOptions options =
      parse_server({"--seed", "4294967295", "::1", "--threads=8", "0", "--max-questions", "10"});
  EXPECT_EQ(options.host, "::1");
  EXPECT_EQ(options.port, "0");
  EXPECT_EQ(options.seed, 4294967295U);
  EXPECT_EQ(options.threads, 8U);
  EXPECT_EQ(options.max_questions, 10U);
}

TEST(Args, ParsesOneCommandLineAfterAnother) {        // getopt_long's state is reset every time
  EXPECT_EQ(read_server({"-h", "x"}), std::nullopt);  // stops halfway
  EXPECT_EQ(parse_server({"h", "2"}).port, "2");
  EXPECT_THROW(read_server({"-xh"}), UsageError);  // stops within "-xh"
  EXPECT_EQ(parse_server({"--seed", "1", "h", "2"}).port, "2");
  EXPECT_EQ(parse_server({"h", "3", "--seed=5"}).seed, 5U);
  EXPECT_EQ(parse_server({"h"}).port, "1234");
}

TEST(Args, RejectsMalformedCommandLinesWithAReason) {
  EXPECT_EQ(usage_error({"127.0.0.1", "http"}),
            "PORT must be a whole number from 0 to 65535, not 'http'");
  EXPECT_EQ(usage_error({"127.0.0.1", "65536"}),
            "PORT must be a whole number from 0 to 65535, not '65536'");
  EXPECT_EQ(usage_error({"--verbose"}), "unknown option '--verbose'");
  EXPECT_EQ(usage_error({"--verbose=3"}), "unknown option '--verbose'");
  EXPECT_EQ(usage_error({"-x"}), "unknown option '-x'");
  EXPECT_EQ(usage_error({"--seed"}), "--seed needs a value");
  EXPECT_EQ(usage_error({"--help=now"}), "--help takes no value");
  EXPECT_EQ(usage_error({"--max-questions", "-3"}),
            "--max-questions must be a whole number from 0 to 4294967295, not '-3'");
  EXPECT_EQ(usage_error({"--seed", "4294967296"}),
            "--seed must be a whole number from 0 to 4294967295, not '4294967296'");
  EXPECT_EQ(usage_error({"--threads", "0"}),
            "--threads must be a whole number from 1 to 100000, not '0' (each thread is a kernel "
            "task with its own stack: 100000 is already past the limits of most systems)");
  EXPECT_EQ(usage_error({"a", "1", "b"}), "unexpected argument 'b'");
  EXPECT_EQ(usage_error({"--", "a", "1", "--seed"}), "unexpected argument '--seed'");
}

TEST(Args, ServersWithoutAPoolHaveNoThreadsOption) {
  EXPECT_THROW(read_server({"--threads", "4"}, {}), UsageError);
}

TEST(Args, HelpStopsTheParse) {
  EXPECT_EQ(read_server({"localhost", "--help"}), std::nullopt);
  EXPECT_EQ(read_server({"-h", "--bogus"}), std::nullopt);
}

TEST(Args, RequiredPositionalsAndFlags) {
  bool cycle = false;
  double delay = 2;
  const std::array<option, 2> long_options = {
      {{"cycle", no_argument, nullptr, 'c'}, {"delay", required_argument, nullptr, 'd'}}};
  const auto parse = [&](const std::vector<std::string_view>& args) {
    CommandLine line(args);
    auto positionals = parse_command_line(line.argc(), line.argv(), "", long_options,
                                          [&](int val, const char* value) {
                                            if (val == 'c') cycle = true;
                                            if (val == 'd') delay = parse_seconds(value, "--delay");
                                          });
    if (positionals) check_arguments(*positionals, {"HOST", "PORT"}, 2);
    return positionals;
  };
  EXPECT_THROW(parse({"localhost"}), UsageError);
  EXPECT_THROW(parse({"localhost", "1", "--cycle=yes"}), UsageError);
  EXPECT_EQ(parse({"--cycle", "localhost", "1", "--delay", "0.05"}),
            (std::vector<std::string>{"localhost", "1"}));
  EXPECT_TRUE(cycle);
  EXPECT_DOUBLE_EQ(delay, 0.05);
  EXPECT_EQ(parse({"localhost", "--help"}), std::nullopt);
}

TEST(Args, ExtraOptionsOfAServer) {
  double timeout = 0;
  const ExtraOptions extra{.options = {{"idle-timeout", required_argument, nullptr, 256}},
                           .synopsis = " [--idle-timeout SECONDS]",
                           .help = "  --idle-timeout SECONDS  close a client idle that long\n",
                           .set = [&](int val, const char* value) {
                             EXPECT_EQ(val, 256);
                             timeout = parse_seconds(value, "--idle-timeout");
                           }};
  CommandLine line({"--idle-timeout=1.5", "::1"});
  const auto options = read_server_options(line.argc(), line.argv(), {}, extra);
  ASSERT_TRUE(options.has_value());
  EXPECT_EQ(options->host, "::1");
  EXPECT_DOUBLE_EQ(timeout, 1.5);
  const std::string usage = server_usage("server_epoll", {}, extra);
  EXPECT_NE(usage.find("[--max-questions N] [--idle-timeout SECONDS]\n"), std::string::npos);
  EXPECT_NE(usage.find(extra.help), std::string::npos);
}

TEST(Args, SecondsAreFiniteAndNotNegative) {
  EXPECT_DOUBLE_EQ(parse_seconds("3", "--delay"), 3.0);
  EXPECT_DOUBLE_EQ(parse_seconds("0", "--delay"), 0.0);
  EXPECT_THROW(parse_seconds("-1", "--delay"), UsageError);
  EXPECT_THROW(parse_seconds("soon", "--delay"), UsageError);
  EXPECT_THROW(parse_seconds("inf", "--delay"), UsageError);
  EXPECT_THROW(parse_seconds("nan", "--delay"), UsageError);
  EXPECT_THROW(parse_seconds("1e10", "--delay"), UsageError);  // would overflow a timeout
  EXPECT_DOUBLE_EQ(parse_seconds("86400", "--delay"), 86400.0);
  EXPECT_THROW(parse_seconds("1s", "--delay"), UsageError);
}

TEST(Args, UsageListsEveryOption) {
  const std::string usage = server_usage("server_threads", {.threads = 4});
  EXPECT_EQ(usage.rfind("usage: server_threads [HOST [PORT]] [--seed N]", 0), 0U) << usage;
  for (const char* name :
       {"HOST", "PORT", "--seed N", "--max-questions N", "--threads N", "--help"}) {
    EXPECT_NE(usage.find(name), std::string::npos) << name;
  }
}

TEST(TestSupport, TheLastLineOfNoOutputIsNothingNotACrash) {
  EXPECT_EQ(last_line(""), std::nullopt);
  EXPECT_EQ(last_line("no newline yet"), std::nullopt);
  EXPECT_EQ(last_line("Listening\nShutting down\n"), "Shutting down");
}

// The harness frames replies itself and stops at the first wrong byte: a wrong reply fails its
// test at once, not at the socket's timeout (nor hidden by a bug in the Framer it checks).
TEST(TestSupport, AWrongReplyIsReturnedAsSoonAsItDiffers) {
  const SocketPair pair;
  send_all(pair.b.get(), "Q? Yes.R? Perhaps");  // the second never ends with a stock reply
  ReplyBuffer buffer;
  EXPECT_EQ(read_reply(pair.a.get(), buffer, "Q?"), "Q? Yes.");
  EXPECT_EQ(read_reply(pair.a.get(), buffer, "R?"), "R? Perhaps");
  send_all(pair.b.get(), "S? May");
  shutdown(pair.b.get(), SHUT_WR);
  EXPECT_EQ(read_reply(pair.a.get(), buffer, "S?"), "S? May");  // half a reply, then the close
  EXPECT_EQ(read_reply(pair.a.get(), buffer, "T?"), std::nullopt);
}

TEST(TestSupport, ExpectedBytesStopAtTheFirstDifferenceAndSayWhere) {
  const SocketPair pair;
  send_all(pair.b.get(), "A? Yes.B? No.");
  EXPECT_EQ(receive_expected(pair.a.get(), "A? Yes."), "");
  EXPECT_EQ(receive_expected(pair.a.get(), "B? Maybe."),
            "differs at byte 3 of 9: expected ...'B? Maybe.', got ...'B? No.'");
}

// SO_REUSEPORT only where a server asks for it: a second server on a port in use still fails.
TEST(Listener, OnlyListenersMadeToShareAPortShareIt) {
  testing::internal::CaptureStdout();
  const std::vector<Fd> shared = get_server_sockets("127.0.0.1", "0", 2);
  const Fd alone = get_server_socket("127.0.0.1", "0");
  const std::vector<std::string> printed = lines(testing::internal::GetCapturedStdout());
  ASSERT_EQ(shared.size(), 2U);
  EXPECT_EQ(local_address(shared[1].get()), local_address(shared[0].get()));
  EXPECT_EQ(printed.size(), 2U) << "one Listening line for each call";
  const auto in_use = [](const std::string& port, unsigned count) {
    try {
      get_server_sockets("127.0.0.1", port, count);
    } catch (const std::system_error& error) {
      return error.code().value() == EADDRINUSE;
    }
    return false;
  };
  EXPECT_TRUE(in_use(local_address(shared[0].get()).substr(10), 1));
  EXPECT_TRUE(in_use(local_address(alone.get()).substr(10), 2));
}
