// server_epoll as a production loop must behave: a burst of connects does not hold up the
// clients already connected, a burst of replies leaves no memory behind once it drains, and an
// event for a connection closed earlier in the same batch is skipped.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "common/net.hpp"
#include "server_epoll/connection.hpp"
#include "tests/epoll_turn.hpp"
#include "tests/support.hpp"

namespace {
// A socket connecting to 127.0.0.1:port without waiting for the server: the kernel completes
// the handshake and the connection waits in the listen backlog until it is accepted.
Fd connect_without_waiting(const std::string& port) {
  Fd sock(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int result = connect(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
  EXPECT_TRUE(result == 0 || errno == EINPROGRESS) << std::strerror(errno);
  return sock;
}
}  // namespace

// 3000 connects and a question arrive while the server is stopped, so that its next wake-up
// finds both: the listener first (it became ready first), then the asker. A loop that accepts
// until the backlog is empty logs all 3000 accepts before it answers; capped accepts answer the
// asker after the first few.
TEST(ServerEpoll, AConnectedClientIsAnsweredBetweenTheAcceptsOfAStorm) {
  raise_fd_limit();
  constexpr std::size_t storm = 3000;
  Server server("server_epoll", {"--max-questions", "1", "--seed", "42"});
  const Fd asker = connect_port(server.port);
  const std::string peer = local_address(asker.get());
  ASSERT_EQ(server.read_line(), "Accepted connection from " + peer);

  ASSERT_EQ(kill(server.pid(), SIGSTOP), 0);
  int status = 0;
  ASSERT_EQ(waitpid(server.pid(), &status, WUNTRACED), server.pid());
  ASSERT_TRUE(WIFSTOPPED(status));
  std::vector<Fd> storming;
  for (std::size_t i = 0; i < storm; ++i) storming.push_back(connect_without_waiting(server.port));
  ASSERT_EQ(send(asker.get(), "Q?", 2, MSG_NOSIGNAL), 2);
  ASSERT_EQ(kill(server.pid(), SIGCONT), 0);

  std::size_t accepted_before = 0;
  std::optional<std::string> line;
  while ((line = server.read_line()) && starts_with(line, "Accepted connection from ")) {
    ++accepted_before;
  }
  EXPECT_EQ(line, "Closing connection to " + peer + " after 1 questions");
  EXPECT_LT(accepted_before, storm) << "the asker waited for every accept of the storm";
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(read_reply(asker.get(), buffer, "Q?"), "Q? Maybe."));
  // And none of the storm is lost: the rest are accepted on the next wake-ups.
  const std::regex accepted("^Accepted connection from ");
  EXPECT_EQ(wait_for_lines(server, accepted, storm + 1).size(), storm + 1)  // and the asker
      << "the clients left in the backlog by the accept cap were not accepted: an edge-triggered "
         "listener is not reported again for them (keep it level-triggered, or re-arm it)";
}

// The seam makes epoll_wait report every event twice: the end of stream of a client that closes
// before it asks anything comes alone in its batch, so its second event finds the slot its first
// emptied, as after a handler that closes other connections.
TEST(ServerEpoll, AnEventForAConnectionClosedEarlierInItsBatchIsSkipped) {
  if (under_address_sanitizer)
    GTEST_SKIP() << "AddressSanitizer must be loaded before LD_PRELOAD's library";
  setenv("LD_PRELOAD", EPOLL_SEAM, 1);
  setenv("SPHINX_EPOLL_WAIT_TWICE", "1", 1);
  Server server("server_epoll", {"--max-questions", "0"});
  unsetenv("LD_PRELOAD");
  unsetenv("SPHINX_EPOLL_WAIT_TWICE");
  Fd closer = connect_port(server.port);
  const std::string peer = local_address(closer.get());
  EXPECT_EQ(server.read_line(), "Accepted connection from " + peer);
  closer.reset();
  EXPECT_EQ(server.read_line(), "Client " + peer + " closed the connection");
  const Fd asker = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(asker.get(), buffer, "Still there?"), "Still there? "))
      << "server_epoll died on the second event: " << server.wait_exit(1s).value_or(-1);
}

namespace {
std::size_t held(const Connection& c) { return c.outgoing.capacity() + c.unanswered.capacity(); }

// A client's end and the server's connection, over a socketpair.
struct ClientAndConnection {
  Fd client;
  Connection c;
};
ClientAndConnection connected() {
  int ends[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends), 0);
  return {Fd(ends[0]), Connection(Fd(ends[1]), "client", 42)};
}

// Counts the handlers' walks of the heap; in this test binary it replaces glibc's, which would
// hand this process's free pages back to the kernel.
int heap_walks = 0;
}  // namespace

extern "C" int malloc_trim(std::size_t /*pad*/) {
  ++heap_walks;
  return 0;
}

// A client floods questions without reading until back-pressure stops the server reading from
// it, then reads every reply and goes quiet: its connection gives back what the burst took.
TEST(ServerEpollHandlers, ABurstsMemoryIsGivenBackOnceItDrains) {
  auto [client, c] = connected();
  const ServerOptions options{.max_questions = 0};
  std::array<char, std::size_t{16} * 1024> buffer{};
  std::string questions_block;
  for (int i = 0; i < 1000; ++i) questions_block += "Will I be happy tomorrow?";

  std::size_t sent = 0;
  for (int round = 0; round < 10000 && c.watched != Want::write; ++round) {
    const std::size_t offset = sent % questions_block.size();
    const ssize_t n = send(client.get(), questions_block.data() + offset,
                           questions_block.size() - offset, MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<std::size_t>(n);
    ASSERT_NE(take_turn(c, options, buffer), Want::close);
  }
  ASSERT_EQ(c.watched, Want::write) << "back-pressure never stopped the reading";
  const std::size_t peak = held(c);
  EXPECT_GT(peak, MAX_UNSENT);

  // Drained: nothing unsent, nothing left to read on either side.
  for (int round = 0; round < 100000; ++round) {
    ASSERT_NE(take_turn(c, options, buffer), Want::close);
    std::array<char, 65536> chunk{};
    const bool client_read = recv(client.get(), chunk.data(), chunk.size(), 0) > 0;
    if (!client_read && c.unsent() == 0 && !readable_within(c.sock.get(), 0ms)) break;
  }
  EXPECT_EQ(c.unsent(), 0U);
  EXPECT_EQ(c.watched, Want::read);
  EXPECT_LE(held(c), std::size_t{8} * 1024)
      << "at the peak " << peak << ": replies " << c.outgoing.capacity() << ", questions "
      << c.unanswered.capacity();
}

// A client that pipelines a few long questions and reads the replies makes its buffers grow past
// KEEP_WHEN_IDLE and drain on every round trip. Giving the pages back walks the whole heap, every
// connection's: with 10,000 connections, one walk per round trip would cost them all.
TEST(ServerEpollHandlers, RoundTripsOfLongQuestionsDoNotWalkTheHeapEachTime) {
  auto [client, c] = connected();
  const ServerOptions options{.max_questions = 0};
  std::array<char, std::size_t{16} * 1024> buffer{};
  const std::string questions = std::string(3999, 'x') + "?" + std::string(3999, 'y') + "?";
  constexpr int rounds = 100;
  const int walks_before = heap_walks;
  for (int round = 0; round < rounds; ++round) {
    std::size_t sent = 0;
    std::string replies;
    while (std::count(replies.begin(), replies.end(), '.') < 2) {
      if (sent < questions.size()) {
        const ssize_t n =
            send(client.get(), questions.data() + sent, questions.size() - sent, MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<std::size_t>(n);
      }
      ASSERT_NE(take_turn(c, options, buffer), Want::close);
      std::array<char, 65536> chunk{};
      const ssize_t n = recv(client.get(), chunk.data(), chunk.size(), 0);
      if (n > 0) replies.append(chunk.data(), static_cast<std::size_t>(n));
    }
    ASSERT_EQ(c.unsent(), 0U);
  }
  EXPECT_LE(held(c), std::size_t{8} * 1024);
  EXPECT_LT(heap_walks - walks_before, rounds / 2)
      << "the heap was walked on " << heap_walks - walks_before << " of " << rounds
      << " round trips";
}
