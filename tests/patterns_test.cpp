// The lab's lesson, as tests: how many clients each pattern serves at once, and what the
// asynchronous server does that the others do not need to (partial writes, back-pressure).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <thread>

#include "common/log.hpp"
#include "common/net.hpp"
#include "tests/support.hpp"

namespace {
// Connections that have each asked a question and got the answer, and stay connected.
std::vector<Fd> held_clients(const std::string& port, int count) {
  std::vector<Fd> held;
  for (int i = 0; i < count; ++i) {
    held.push_back(connect_port(port));
    ReplyBuffer buffer;
    EXPECT_NE(ask(held.back().get(), buffer, "Held?"), "<closed>") << "client " << i;
  }
  return held;
}
}  // namespace

TEST(ServerSimple, ServesTheSecondClientOnlyWhenTheFirstLeaves) {
  Server server("server_simple");
  std::vector<Fd> first = held_clients(server.port, 1);
  const Fd second = connect_port(server.port);  // lands in the backlog
  send_all(second.get(), "Second?");
  EXPECT_FALSE(readable_within(second.get(), 300ms));  // the first client still holds the server
  first.clear();
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(read_reply(second.get(), buffer, "Second?"), "Second? "));
}

TEST(ServerThreads, FourThreadsServeFourClientsAndTheFifthWaits) {
  Server server("server_threads", {"--threads", "4"});
  std::vector<Fd> held = held_clients(server.port, 4);
  EXPECT_EQ(thread_count(server.pid()), 5 + sanitizer_threads);  // main and the four in the pool
  const Fd fifth = connect_port(server.port);
  send_all(fifth.get(), "Fifth?");
  EXPECT_FALSE(readable_within(fifth.get(), 300ms));
  held.pop_back();  // one of the four leaves: its thread takes the fifth
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(read_reply(fifth.get(), buffer, "Fifth?"), "Fifth? "));
  EXPECT_EQ(thread_count(server.pid()), 5 + sanitizer_threads);
}

TEST(ServerThreads, SixtyFourThreadsServeSixtyFourClientsAtOnce) {
  Server server("server_threads", {"--threads", "64"});
  const std::vector<Fd> held = held_clients(server.port, 64);
  EXPECT_EQ(thread_count(server.pid()), 65 + sanitizer_threads);
}

TEST(ServerEpoll, OneThreadServesAThousandClientsAtOnce) {
  if (!server_args().empty()) GTEST_SKIP() << server_args_skip << " (it counts one thread)";
  raise_fd_limit();
  Server server("server_epoll");
  std::vector<Fd> clients;
  for (int i = 0; i < 1000; ++i) {
    clients.push_back(connect_port(server.port));
    send_all(clients.back().get(), "Q" + std::to_string(i) + "?");
  }
  for (int i = 0; i < 1000; ++i) {
    ReplyBuffer buffer;
    const std::string question = "Q" + std::to_string(i) + "?";
    ASSERT_TRUE(starts_with(read_reply(clients[i].get(), buffer, question), question + " "));
  }
  EXPECT_EQ(thread_count(server.pid()), 1);
}

TEST(ServerEpoll, TheLabsLimitAnswersTenOfFifteenPipelinedQuestionsInOrder) {
  Server server("server_epoll", {"--seed", "42"});
  const Fd sock = connect_port(server.port);
  std::string pipelined;
  for (int i = 1; i <= 15; ++i) pipelined += std::to_string(i) + "?";
  send_all(sock.get(), pipelined);
  const std::string replies = read_until_close(sock.get());
  EXPECT_EQ(replies.rfind("1? Maybe.2? Maybe.3? Very likely.", 0), 0U) << replies;
  EXPECT_NE(replies.find("10? "), std::string::npos) << replies;
  EXPECT_EQ(replies.find("11?"), std::string::npos) << replies;
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> closing = server.read_line();
  EXPECT_NE(closing.value_or("").find(" after 10 questions"), std::string::npos);
}

TEST(ServerEpoll, MaxQuestionsZeroMeansNoLimit) {
  Server server("server_epoll", {"--max-questions", "0"});
  const Fd sock = connect_port(server.port);
  ReplyBuffer buffer;
  for (int i = 0; i < 25; ++i) ASSERT_NE(ask(sock.get(), buffer, "More?"), "<closed>") << i;
}

TEST(ServerEpoll, AClientThatSendsWithoutReadingDelaysNoOther) {
  Server server("server_epoll", {"--max-questions", "0"});
  const Fd flooder = connect_port(server.port);
  flood(flooder.get(), '?', std::size_t{4} * 1024 * 1024);
  const Fd other = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(other.get(), buffer, "Still there?"), "Still there? "));
}

TEST(ServerEpoll, AReaderThatFallsBehindGetsEveryReplyByteExact) {
  // A million pipelined questions and a second of reading nothing: the server's socket buffer
  // fills, its sends come up short, and it must keep the rest of each reply and send it later
  // (partial writes), and stop reading while the unsent replies pass its bound (back-pressure).
  // Then the test reads, sending the rest of the questions as the server takes them, and checks
  // every byte.
  Server server("server_epoll", {"--max-questions", "0", "--seed", "42"});
  const Fd sock = connect_port(server.port);
  fcntl(sock.get(), F_SETFL, O_NONBLOCK);
  std::string asked;
  std::string expected;
  std::mt19937 gen = make_generator(42);  // what the server's replies must be
  for (int i = 0; i < 1'000'000; ++i) {
    const std::string question = "Q" + std::to_string(i) + "?";
    asked += question;
    make_reply(question, gen, expected);
  }
  std::size_t sent = 0;
  const auto send_what_it_takes = [&] {
    ssize_t n = 0;
    while (sent < asked.size() &&
           (n = send(sock.get(), asked.data() + sent, asked.size() - sent, MSG_NOSIGNAL)) > 0) {
      sent += static_cast<std::size_t>(n);
    }
  };
  send_what_it_takes();
  std::this_thread::sleep_for(1s);  // the scenario itself: a reader that falls behind
  send_what_it_takes();
  EXPECT_LT(sent, asked.size()) << "the server took every question without waiting for us";

  std::size_t got = 0;
  char chunk[65536];
  while (got < expected.size()) {
    pollfd ready{sock.get(), static_cast<short>(POLLIN | (sent < asked.size() ? POLLOUT : 0)), 0};
    ASSERT_GT(poll(&ready, 1, static_cast<int>(std::chrono::milliseconds(patience).count())), 0)
        << "nothing for " << patience.count() << " s after " << got << " bytes";
    if ((ready.revents & POLLOUT) != 0) send_what_it_takes();
    if ((ready.revents & ~POLLOUT) == 0) continue;
    const ssize_t n = recv(sock.get(), chunk, sizeof chunk, 0);
    ASSERT_GT(n, 0) << "the server closed or failed after " << got << " bytes";
    const std::string_view part(chunk, static_cast<std::size_t>(n));
    const std::string_view want = std::string_view(expected).substr(got, part.size());
    if (part != want) {
      const auto at = static_cast<std::size_t>(
          std::mismatch(part.begin(), part.end(), want.begin(), want.end()).first - part.begin());
      FAIL() << "the replies differ from byte " << got + at << " on: got '"
             << escape(part.substr(at, 40)) << "', expected '" << escape(want.substr(at, 40))
             << "'";
    }
    got += part.size();
  }
  EXPECT_EQ(sent, asked.size());
}

TEST(ServerThreads, FourIdleClientsBlockAPoolOfFour) {
  Server server("server_threads", {"--threads", "4"});
  std::vector<Fd> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(connect_port(server.port));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection"));
  const Fd fifth = connect_port(server.port);
  send_all(fifth.get(), "Anyone?");
  EXPECT_FALSE(readable_within(fifth.get(), 300ms));  // the lab's denial of service
  idle.clear();
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(read_reply(fifth.get(), buffer, "Anyone?"), "Anyone? "));
}

TEST(ServerEpoll, AThousandIdleClientsBlockNobody) {
  raise_fd_limit();
  Server server("server_epoll");
  std::vector<Fd> idle;
  for (int i = 0; i < 1000; ++i) idle.push_back(connect_port(server.port));
  const Fd asker = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(asker.get(), buffer, "Anyone?"), "Anyone? "));
}

TEST(ServerEpoll, FiveHundredHalfSentQuestionsDelayNoRealClient) {
  Server server("server_epoll");
  std::vector<Fd> slow;  // slowloris: each sends part of a question and stalls
  for (int i = 0; i < 500; ++i) {
    slow.push_back(connect_port(server.port));
    send_all(slow.back().get(), "Will I be hap");
  }
  Child client("client_questions", {"127.0.0.1", server.port});
  EXPECT_EQ(client.wait_exit(), 0);
  EXPECT_EQ(lines(client.out()).size(), 3U);
}

TEST(ServerEpoll, AClientThatNeverReadsLeavesTheServersMemoryBounded) {
  Server server("server_epoll", {"--max-questions", "0"});
  const long before = peak_rss_kib(server.pid());
  std::vector<Fd> flooders;
  for (int i = 0; i < 8; ++i) {
    flooders.push_back(connect_port(server.port));
    // Each question is one byte and its reply 15: unread, 4 MB of questions would pile up as
    // 60 MB of replies. With back-pressure the server stops reading long before.
    flood(flooders.back().get(), '?', std::size_t{4} * 1024 * 1024);
  }
  EXPECT_LT(peak_rss_kib(server.pid()) - before, sanitizer_memory_factor * 8 * 1024)
      << "KiB more at the peak for 8 clients that never read";
  const Fd other = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(other.get(), buffer, "And me?"), "And me? "));
}
