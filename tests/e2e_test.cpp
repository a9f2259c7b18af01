// End-to-end tests of the real binaries: servers started on port 0, driven by the real client
// and by raw sockets, judged by what comes back and by what they print.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <csignal>
#include <regex>
#include <thread>

#include "common/net.hpp"
#include "tests/support.hpp"

namespace {
const std::vector<std::string> seed_42_transcript = {
    "Will I be happy tomorrow? Maybe.",
    "Is general artificial intelligence possible? Maybe.",
    "Is there true free will? Very likely.",
};

// A fake server, played by the test: the client as a misbehaving server sees it.
class FakeServer {
 public:
  FakeServer() : listener_(get_server_socket("127.0.0.1", "0")) {}
  [[nodiscard]] std::string port() const { return local_address(listener_.get()).substr(10); }
  // The next client's connection and the first question on it.
  Fd accept_question(Framer& buffer, std::string_view question) {
    Fd sock = accept_within(listener_.get());
    set_timeouts(sock.get(), 10s);  // a client in --cycle waits its delay before the first one
    EXPECT_EQ(recv_upto(sock.get(), buffer, '?'), std::string(question));
    return sock;
  }

 private:
  Fd listener_;
};
}  // namespace

// The behaviour every pattern shares: run against every server (SERVERS in the Makefile).
class AllServers : public testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Servers, AllServers, testing::ValuesIn(all_servers()), server_name);

TEST_P(AllServers, PrintsWhoComesAndGoesAndClosesTheirDescriptors) {
  Server server(GetParam());
  const int baseline = fd_count(server.pid());  // all set up once it prints where it listens
  for (int round = 0; round < 3; ++round) {
    std::string me;
    {
      const Fd sock = connect_port(server.port);
      me = local_address(sock.get());
      EXPECT_EQ(server.read_line(), "Accepted connection from " + me);
      ReplyBuffer buffer;
      EXPECT_NE(ask(sock.get(), buffer, "Am I?"), "<closed>");
    }
    EXPECT_EQ(server.read_line(), "Client " + me + " closed the connection");
    EXPECT_EQ(fd_count_settled(server.pid(), baseline), baseline);
  }
}

TEST_P(AllServers, TheClientPrintsTheSameThreeRepliesForTheSameSeed) {
  Server server(GetParam(), {"--seed", "42"});
  Child client("client_questions", {"127.0.0.1", server.port});
  EXPECT_EQ(client.wait_exit(), 0);
  EXPECT_EQ(lines(client.out()), seed_42_transcript);
  EXPECT_EQ(client.err(), "");
}

TEST_P(AllServers, DashECausesTheServersErrorLineAndTheServerGoesOn) {
  Server server(GetParam(), {"--seed", "42"});
  Child bad("client_questions", {"127.0.0.1", server.port, "-e"});
  EXPECT_EQ(bad.wait_exit(), 0);
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> error = server.read_line();
  ASSERT_TRUE(error);
  EXPECT_NE(error->find(" error: received 'Will I be happy tomorrow' then socket closed"),
            std::string::npos)
      << *error;
  Child good("client_questions", {"127.0.0.1", server.port});
  EXPECT_EQ(good.wait_exit(), 0);
  EXPECT_EQ(lines(good.out()), seed_42_transcript);
}

TEST_P(AllServers, CycleAsksUntilTheServerClosesThenExitsZero) {
  Server server(GetParam(), {"--max-questions", "10"});
  Child client("client_questions", {"127.0.0.1", server.port, "--cycle", "--delay", "0.05"});
  EXPECT_EQ(client.wait_exit(), 0);
  const std::vector<std::string> replies = lines(client.out());
  ASSERT_EQ(replies.size(), 10U);
  for (std::size_t i = 0; i < replies.size(); ++i) {
    EXPECT_TRUE(starts_with(replies[i], std::string(questions[i % 3]) + " ")) << replies[i];
  }
  EXPECT_EQ(client.err(), "client_questions: the server closed the connection\n");
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  EXPECT_TRUE(starts_with(server.read_line(), "Closing connection to 127.0.0.1:"));
  EXPECT_NE(server.out().find(" after 10 questions\n"), std::string::npos);
}

TEST(ClientQuestions, ConnectionRefusedIsARuntimeFailure) {
  Fd placeholder(socket(AF_INET, SOCK_STREAM, 0));  // a port that nobody listens on
  sockaddr_in address{
      .sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}, .sin_zero = {}};
  ASSERT_EQ(bind(placeholder.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  const std::string port = local_address(placeholder.get()).substr(10);
  Child client("client_questions", {"127.0.0.1", port});
  EXPECT_EQ(client.wait_exit(), 1);
  EXPECT_EQ(client.err(),
            "client_questions: cannot connect to 127.0.0.1:" + port + ": Connection refused\n");
}

TEST(ClientQuestions, AServerThatClosesMidReplyIsARuntimeFailure) {
  FakeServer server;
  Child client("client_questions", {"127.0.0.1", server.port()});
  Framer buffer(MAX_QUESTION, "question");
  Fd sock = server.accept_question(buffer, questions[0]);
  send_all(sock.get(), "Will I be happy tomorrow? Ma");
  sock.reset();
  EXPECT_EQ(client.wait_exit(), 1);
  EXPECT_EQ(client.err(),
            "client_questions: received 'Will I be happy tomorrow? Ma' then socket closed\n");
}

TEST(ClientQuestions, PrintsWhatTheServerSentEscaped) {
  FakeServer server;
  Child client("client_questions", {"127.0.0.1", server.port()});
  Framer buffer(MAX_QUESTION, "question");
  const Fd sock = server.accept_question(buffer, questions[0]);
  send_all(sock.get(), std::string(questions[0]) + " \x1b[2J\x07\\Yes.");
  for (const std::string_view question : {questions[1], questions[2]}) {
    EXPECT_EQ(recv_upto(sock.get(), buffer, '?'), std::string(question));
    send_all(sock.get(), std::string(question) + " No.");
  }
  EXPECT_EQ(client.wait_exit(), 0) << client.err();
  const std::vector<std::string> printed = lines(client.out());
  ASSERT_EQ(printed.size(), 3U) << client.out();
  EXPECT_EQ(printed[0], std::string(questions[0]) + " \\x1b[2J\\x07\\\\Yes.");
}

TEST(ClientQuestions, CycleTellsBytesNobodyAskedForFromAClose) {
  FakeServer server;
  // --cycle waits before every question, the first too: 4 s before each is room enough for
  // the bytes to come during the wait, and for the exit to come before the wait would end.
  Child client("client_questions", {"127.0.0.1", server.port(), "--cycle", "--delay", "4"});
  Framer buffer(MAX_QUESTION, "question");
  const Fd sock = server.accept_question(buffer, questions[0]);
  send_all(sock.get(), std::string(questions[0]) + " Yes.");
  // Once the client has printed the reply it waits before its next question: bytes then.
  ASSERT_EQ(client.read_line(10s), std::string(questions[0]) + " Yes.");  // after its 4 s wait
  send_all(sock.get(), "\x1b[2J");
  EXPECT_EQ(client.wait_exit(3s), 1);  // at once, not after its 4 s wait
  EXPECT_EQ(client.err(), "client_questions: the server sent '\\x1b[2J' unasked\n");
}

TEST(ClientQuestions, CycleTellsBytesThatCameWithAReply) {
  FakeServer server;
  Child client("client_questions", {"127.0.0.1", server.port(), "--cycle", "--delay", "0"});
  Framer buffer(MAX_QUESTION, "question");
  const Fd sock = server.accept_question(buffer, questions[0]);
  send_all(sock.get(), std::string(questions[0]) + " Yes.Surprise!");
  EXPECT_EQ(client.wait_exit(patience), 1);  // at once, not on its next question
  EXPECT_EQ(client.out(), std::string(questions[0]) + " Yes.\n");
  EXPECT_EQ(client.err(), "client_questions: the server sent 'Surprise!' unasked\n");
}

TEST(ClientQuestions, CycleEndsCleanlyWhenTheServerClosesDuringItsWait) {
  FakeServer server;
  Child client("client_questions", {"127.0.0.1", server.port(), "--cycle", "--delay", "4"});
  Framer buffer(MAX_QUESTION, "question");
  Fd sock = server.accept_question(buffer, questions[0]);
  send_all(sock.get(), std::string(questions[0]) + " Yes.");
  ASSERT_EQ(client.read_line(10s), std::string(questions[0]) + " Yes.");  // after its 4 s wait
  sock.reset();
  EXPECT_EQ(client.wait_exit(3s), 0);  // at once, not after its 4 s wait
  EXPECT_EQ(client.err(), "client_questions: the server closed the connection\n");
}

TEST(ServerThreads, AThreadCountPastTheBoundIsAUsageErrorThatSaysWhy) {
  Child server("server_threads", {"--threads", "4000000000"});
  EXPECT_EQ(server.wait_exit(), 2);
  EXPECT_EQ(server.out(), "");
  EXPECT_TRUE(starts_with(server.err(),
                          "server_threads: --threads must be a whole number from 1 to 100000, not "
                          "'4000000000' (each thread is a kernel task with its own stack"))
      << server.err();
}

TEST_P(AllServers, MaxQuestionsAnswersThatManyPipelinedQuestionsThenCloses) {
  Server server(GetParam(), {"--max-questions", "3", "--seed", "42"});
  const Fd sock = connect_port(server.port);
  send_all(sock.get(), "1?2?3?4?5?");
  EXPECT_EQ(read_until_close(sock.get()), "1? Maybe.2? Maybe.3? Very likely.");
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> closing = server.read_line();
  EXPECT_TRUE(starts_with(closing, "Closing connection to 127.0.0.1:")) << closing.value_or("");
  EXPECT_NE(closing.value_or("").find(" after 3 questions"), std::string::npos);
}

TEST_P(AllServers, TheSameSeedGivesTheSameTranscriptOnEveryConnection) {
  // The transcript the seed rule gives, computed here: a connection that got nothing, or got
  // replies from a generator shared with the others, cannot match it.
  constexpr int asked = 12;
  std::mt19937 gen = make_generator(7);
  std::string expected;
  for (int k = 0; k < asked; ++k) make_reply("Again?", gen, expected);

  // Four clients at once, as many as server_threads has threads by default (server_simple
  // serves them one after another, which the rule allows just the same).
  Server server(GetParam(), {"--seed", "7", "--max-questions", "0"});
  std::vector<std::string> transcripts(4);
  {
    std::vector<std::jthread> clients;
    for (std::string& transcript : transcripts) {
      clients.emplace_back([&server, &transcript] {
        try {
          const Fd sock = connect_port(server.port);
          ReplyBuffer buffer;
          for (int k = 0; k < asked; ++k) transcript += ask(sock.get(), buffer, "Again?");
        } catch (const std::exception& error) {
          transcript += std::string("<") + error.what() + ">";
        }
      });
    }
  }  // joins the clients
  for (const std::string& transcript : transcripts) EXPECT_EQ(transcript, expected);
}

TEST_P(AllServers, AQuestionWithADotIsEchoedWhole) {
  Server server(GetParam());
  const Fd sock = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_TRUE(
      starts_with(ask(sock.get(), buffer, "Is 1.5 more than 1.25?"), "Is 1.5 more than 1.25? "));
}

TEST_P(AllServers, LogsWhatAClientSentEscaped) {
  Server server(GetParam());
  {
    const Fd sock = connect_port(server.port);
    send_all(sock.get(), std::string("evil\x1b[2J\0", 9));
  }
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> line = server.read_line();
  EXPECT_NE(line.value_or("").find(" error: received 'evil\\x1b[2J\\x00' then socket closed"),
            std::string::npos)
      << line.value_or("");
}

TEST_P(AllServers, AnOverlongQuestionClosesThatConnectionOnly) {
  Server server(GetParam());
  {
    const Fd sock = connect_port(server.port);
    send_all(sock.get(), std::string(MAX_QUESTION + 1, 'x'));
    EXPECT_EQ(read_until_close(sock.get()), "");
  }
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> line = server.read_line();
  EXPECT_NE(line.value_or("").find(" error: question longer than 4096 bytes"), std::string::npos)
      << line.value_or("");
  Child client("client_questions", {"127.0.0.1", server.port});
  EXPECT_EQ(client.wait_exit(), 0);
}

TEST_P(AllServers, SigtermWithClientsConnectedShutsDownCleanly) {
  if (tsan_cannot_signal(GetParam())) GTEST_SKIP() << "see tsan_cannot_signal in tests/support.hpp";
  Server server(GetParam());
  const Fd idle = connect_port(server.port);
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const Fd midway = connect_port(server.port);
  send_all(midway.get(), "Will I be");
  server.send_signal(SIGTERM);
  EXPECT_EQ(server.wait_exit(stop_timeout), 0);
  EXPECT_EQ(last_line(server.out()), "Shutting down");
  EXPECT_TRUE(server.err().empty()) << server.err();
  EXPECT_EQ(read_until_close(idle.get()), "");  // the server closed our connection
}

TEST_P(AllServers, AnswersAQuestionSentOneByteAtATime) {
  Server server(GetParam());
  const Fd sock = connect_port(server.port);
  const std::string question = "Will I be happy tomorrow?";
  for (const char c : question.substr(0, question.size() - 1)) {
    send_all(sock.get(), std::string_view(&c, 1));
  }
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(sock.get(), buffer, "?"), question + " "));
}

TEST_P(AllServers, EchoesBinaryAndNulBytesExactly) {
  Server server(GetParam());
  const Fd sock = connect_port(server.port);
  const std::string question("\0\x01\xfe\n\0bin?", 9);
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(sock.get(), buffer, question), question + " "));
}

TEST_P(AllServers, AHalfClosedClientStillGetsItsReplies) {
  Server server(GetParam(), {"--seed", "42"});
  const Fd sock = connect_port(server.port);
  send_all(sock.get(), "1?2?");
  shutdown(sock.get(), SHUT_WR);
  EXPECT_EQ(read_until_close(sock.get()), "1? Maybe.2? Maybe.");
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> line = server.read_line();
  EXPECT_NE(line.value_or("").find(" closed the connection"), std::string::npos)
      << line.value_or("");
}

TEST_P(AllServers, APortInUseIsARuntimeFailure) {
  Server first(GetParam());
  Child second(GetParam(), {"127.0.0.1", first.port});
  EXPECT_EQ(second.wait_exit(), 1);
  EXPECT_EQ(second.err(), GetParam() + ": cannot listen on 127.0.0.1:" + first.port +
                              ": Address already in use\n");
}

TEST(ServerSimple, ListensOnIpv6) {
  Child server("server_simple", {"::1", "0"});
  const std::optional<std::string> line = server.read_line();
  if (!line && server.wait_exit() == 1 && server.err().find("Cannot assign") != std::string::npos) {
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  ASSERT_TRUE(starts_with(line, "Listening for incoming connections at [::1]:")) << server.err();
  Child client("client_questions", {"::1", line->substr(line->rfind(':') + 1)});
  EXPECT_EQ(client.wait_exit(), 0);
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from [::1]:"));
}

struct BadCommandLine {
  std::string program;
  std::vector<std::string> args;
};

class UsageErrors : public testing::TestWithParam<BadCommandLine> {};

TEST_P(UsageErrors, ExitTwoWithAReasonAndTheUsage) {
  Child child(GetParam().program, GetParam().args);
  EXPECT_EQ(child.wait_exit(), 2);
  EXPECT_EQ(child.out(), "");
  const std::vector<std::string> err = lines(child.err());
  ASSERT_GE(err.size(), 2U) << child.err();
  EXPECT_TRUE(starts_with(err[0], GetParam().program + ": ")) << err[0];
  EXPECT_TRUE(starts_with(err[1], "usage: " + GetParam().program + " ")) << err[1];
}

INSTANTIATE_TEST_SUITE_P(
    AllPrograms, UsageErrors,
    testing::Values(BadCommandLine{"server_simple", {"127.0.0.1", "port"}},
                    BadCommandLine{"server_simple", {"127.0.0.1", "70000"}},
                    BadCommandLine{"server_simple", {"--seed"}},
                    BadCommandLine{"server_simple", {"--max-questions", "-1"}},
                    BadCommandLine{"server_simple", {"--threads", "4"}},
                    BadCommandLine{"server_threads", {"--threads", "0"}},
                    BadCommandLine{"server_epoll", {"--threads", "2"}},
                    BadCommandLine{"server_epoll", {"--max-questions", "ten"}},
                    BadCommandLine{"client_questions", {"127.0.0.1"}},
                    BadCommandLine{"server_threads", {"--threads", "4000000000"}},
                    BadCommandLine{"client_questions", {"127.0.0.1", "1", "--delay", "-2"}},
                    BadCommandLine{"client_questions", {"127.0.0.1", "1", "--delay", "1"}},
                    BadCommandLine{"client_questions", {"127.0.0.1", "1", "--bogus"}},
                    BadCommandLine{"client_questions", {"127.0.0.1", "1", "-e", "--cycle"}}));

TEST(Help, PrintsTheUsageAndExitsZero) {
  std::vector<std::string> programs = all_servers();
  programs.insert(programs.end(), {"client_questions", "async_sync"});
  for (const std::string& program : programs) {
    Child child(program, {"--help"});
    EXPECT_EQ(child.wait_exit(), 0);
    EXPECT_TRUE(starts_with(child.out(), "usage: " + program)) << child.out();
    EXPECT_EQ(child.err(), "");
  }
}

// What a test that counts a server's log lines must do: wait until the server has printed them.
TEST(WaitForLines, WaitsUntilTheServerHasPrintedThemAll) {
  Server server("server_epoll");
  {
    std::vector<Fd> clients;
    for (int k = 0; k < 50; ++k) clients.push_back(connect_port(server.port));
  }  // all 50 closed at once: the server prints their lines over the next milliseconds
  const std::regex closed("^Client 127\\.0\\.0\\.1:[0-9]+ closed the connection$");
  EXPECT_EQ(wait_for_lines(server, closed, 50).size(), 50U) << server.out();
  EXPECT_EQ(wait_for_lines(server, closed, 51, 100ms).size(), 50U) << "a line counted twice";
}
