// The edges of a conversation: the close the server decides on (the question limit, a question
// too long), a signal the moment a server listens, a failure of one client's bookkeeping.
// Whatever happens there, every reply already made reaches the client, and the server goes on.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <regex>
#include <system_error>

#include "common/net.hpp"
#include "common/server.hpp"
#include "tests/support.hpp"

namespace {
// A client that reads slowly: a 4096-byte receive buffer, set before connecting, since the
// window it advertises is settled by the handshake.
Fd connect_small_buffer(const std::string& port) {
  Fd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int size = 4096;
  setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  set_timeouts(sock.get());
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    throw std::system_error(errno, std::generic_category(), "connect");
  }
  return sock;
}

// Everything received until an end of stream, a reset or the receive timeout, and how it ended.
struct Received {
  std::string bytes;
  std::string end;  // "end of stream", or the error
};
Received receive_all(int sock) {
  Received received;
  char chunk[65536];
  while (true) {
    const ssize_t n = recv(sock, chunk, sizeof chunk, 0);
    if (n > 0) {
      received.bytes.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      received.end = "end of stream";
      return received;
    } else if (errno != EINTR) {
      received.end = std::error_code(errno, std::generic_category()).message();
      return received;
    }
  }
}

// The replies a server started with --seed 42 makes to `questions`, in order.
std::vector<std::string> replies_with_seed_42(const std::vector<std::string>& questions) {
  std::mt19937 gen = make_generator(42);
  std::vector<std::string> replies;
  for (const std::string& question : questions) {
    replies.emplace_back();
    make_reply(question, gen, replies.back());
  }
  return replies;
}

// How many of `replies` `bytes` begins with, whole and in order.
std::size_t whole_replies(std::string_view bytes, const std::vector<std::string>& replies) {
  std::size_t count = 0;
  for (const std::string& reply : replies) {
    if (!bytes.starts_with(reply)) break;
    bytes.remove_prefix(reply.size());
    ++count;
  }
  return count;
}
}  // namespace

class Edges : public testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Servers, Edges, testing::ValuesIn(all_servers()), server_name);

// The limit reached while the client's next bytes are still unread: closing then would make the
// kernel answer with a reset, which throws away the replies still queued to send.
TEST_P(Edges, TheLimitReachedWithBytesUnreadStillDeliversEveryReply) {
  Server server(GetParam(), {"--max-questions", "10", "--seed", "42"});
  const Fd sock = connect_small_buffer(server.port);
  std::vector<std::string> questions;
  std::string sent;
  for (char i = 0; i < 10; ++i) {
    questions.push_back(std::string(3999, static_cast<char>('a' + i)) + "?");
    sent += questions.back();
  }
  sent += std::string(20000, '?');  // questions past the limit, never answered
  const std::vector<std::string> replies = replies_with_seed_42(questions);
  std::string expected;
  for (const std::string& reply : replies) expected += reply;

  std::jthread sender([&] {
    try {
      send_all(sock.get(), sent);
    } catch (const std::system_error&) {  // a reset or a timeout: the receiving side reports it
    }
  });
  // The scenario, not a synchronisation: a client that starts reading only after a while.
  std::this_thread::sleep_for(500ms);
  const Received received = receive_all(sock.get());
  sender.join();
  EXPECT_EQ(whole_replies(received.bytes, replies), 10U)
      << received.bytes.size() << " of " << expected.size() << " bytes, then " << received.end;
  EXPECT_TRUE(received.bytes == expected);
  EXPECT_EQ(received.end, "end of stream");
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  EXPECT_TRUE(starts_with(server.read_line(), "Closing connection to "));
}

// A client that neither reads nor closes once the server has closed its side: the lingering
// close ends at its deadline (2 s), not never, so such clients cannot pile up descriptors.
TEST_P(Edges, ALingeringCloseEndsAtItsDeadlineWhenTheClientNeverCloses) {
  Server server(GetParam(), {"--max-questions", "1"});
  const int idle = fd_count(server.pid());
  const Fd sock = connect_port(server.port);
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  send_all(sock.get(), "One?Two?");  // the second past the limit: it stays unread, then lingers
  EXPECT_TRUE(starts_with(server.read_line(), "Closing connection to "));
  EXPECT_EQ(fd_count(server.pid()), idle + 1);  // lingering
  EXPECT_EQ(fd_count_settled(server.pid(), idle, 6s), idle);
}

// What was asked is answered, then the error is logged and the connection closed, whichever
// the pattern, even when the valid question and the over-long one came in the same read.
TEST_P(Edges, AValidQuestionThenAnOverLongOneInOneReadGetsItsReplyThenAClose) {
  Server server(GetParam(), {"--seed", "42"});
  const Fd sock = connect_port(server.port);
  send_all(sock.get(), "1?" + std::string(MAX_QUESTION + 1, 'x'));
  const Received received = receive_all(sock.get());
  EXPECT_EQ(received.bytes, replies_with_seed_42({"1?"})[0]);
  EXPECT_EQ(received.end, "end of stream");
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> line = server.read_line();
  EXPECT_NE(line.value_or("").find(" error: question longer than 4096 bytes"), std::string::npos)
      << line.value_or("");
}

// The lingering close has a deadline of its own: a client that keeps sending after the limit
// and never closes cannot keep its connection open, nor (on server_simple) keep the next client
// waiting, however it spaces its bytes.
TEST_P(Edges, AClientThatKeepsSendingAfterTheLimitIsClosedAtTheLingerDeadline) {
  Server server(GetParam(), {"--max-questions", "1", "--seed", "42"});
  const Fd lingerer = connect_port(server.port);
  send_all(lingerer.get(), "1?2?");
  // A byte every 100 ms for up to 10 s, five times the deadline; only the server's close (a
  // failed send) stops it sooner.
  std::atomic<bool> closed_by_server{false};
  std::jthread trickler([&](const std::stop_token& stop) {
    for (int i = 0; i < 100 && !stop.stop_requested(); ++i) {
      if (send(lingerer.get(), "z", 1, MSG_NOSIGNAL) < 0) {
        closed_by_server = true;
        return;
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  const Received received = receive_all(lingerer.get());
  EXPECT_EQ(received.bytes, replies_with_seed_42({"1?"})[0]);
  EXPECT_EQ(received.end, "end of stream");

  const Fd next = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_EQ(ask(next.get(), buffer, "x?"), replies_with_seed_42({"x?"})[0]);
  trickler.join();
  EXPECT_TRUE(closed_by_server) << "the lingering connection outlived 10 s of trickled bytes";
}

// One end line per connection, however it ends: a client that reads slowly, has its over-long
// question logged while replies are still on their way, then resets, must not get a second line
// for the send that the reset makes fail.
TEST_P(Edges, AResetAfterTheErrorLineIsLoggedAddsNoSecondEndLine) {
  Server server(GetParam(), {"--max-questions", "0"});
  Fd sock = connect_small_buffer(server.port);
  const std::string peer = local_address(sock.get());
  std::string sent;
  for (int i = 0; i < 3000; ++i) sent += std::string(999, 'q') + "?";
  sent += std::string(MAX_QUESTION + 1, 'y');
  std::jthread sender([&] {
    try {
      send_all(sock.get(), sent);
    } catch (const std::system_error&) {  // a timeout: the missing error line says so below
    }
  });
  // Reads a little at a time, a moment apart (the scenario, not a synchronisation), until the
  // server has logged the over-long question, its replies still on their way.
  const std::string error_line = "Client " + peer + " error: question longer than 4096 bytes";
  char chunk[4096];
  while (server.out().find(error_line) == std::string::npos &&
         recv(sock.get(), chunk, sizeof chunk, 0) > 0) {
    std::this_thread::sleep_for(1ms);
  }
  sender.join();
  ASSERT_NE(server.out().find(error_line), std::string::npos) << server.out();
  const linger reset{.l_onoff = 1, .l_linger = 0};
  setsockopt(sock.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  sock.reset();

  // A connection after the reset: once it has ended, the server has seen the reset too.
  {
    const Fd next = connect_port(server.port);
    ReplyBuffer buffer;
    EXPECT_TRUE(starts_with(ask(next.get(), buffer, "Next?"), "Next? "));
  }
  const std::regex next_closed("^Client [^ ]+ closed the connection$");
  EXPECT_EQ(wait_for_lines(server, next_closed, 1).size(), 1U) << server.out();
  const std::string quoted = std::regex_replace(peer, std::regex("[.]"), "\\.");
  const std::regex end_lines("^(Client " + quoted + " |Closing connection to " + quoted + " )");
  EXPECT_EQ(wait_for_lines(server, end_lines, 2, 0ms).size(), 1U) << server.out();
}

// A script that starts a server, reads its first line and signals it at once: the handlers
// must be in place before that line is printed.
TEST_P(Edges, SigtermOrSigintTheMomentItListensExitsCleanlyEveryTime) {
  if (tsan_cannot_signal(GetParam())) GTEST_SKIP() << "see tsan_cannot_signal in tests/support.hpp";
  constexpr int runs = 50;
  for (const int signal : {SIGTERM, SIGINT}) {
    for (int run = 0; run < runs; ++run) {  // up to the first failure: one is enough to know
      Server server(GetParam());            // returns as soon as it has read the "Listening" line
      server.send_signal(signal);
      const std::optional<int> code = server.wait_exit(stop_timeout);
      const std::optional<std::string> line = server.read_line(1s);
      ASSERT_TRUE(code == 0 && line == "Shutting down")
          << GetParam() << ", " << strsignal(signal) << ": run " << run + 1 << " of " << runs
          << " failed: exit " << (code ? std::to_string(*code) : "none") << ", then '"
          << line.value_or("<nothing>") << "'";
    }
  }
}

// What docs/EXERCISES.md exercise 1 builds: a thread per connection, each in process_connection,
// far more of them than any pool size. A stop must return every one. (In this test process:
// nothing else here calls the blocking servers' stages, and a stop cannot be undone.)
TEST(StopRequest, ReturnsEveryThreadBlockedInProcessConnectionHoweverMany) {
  constexpr int count = 64;
  std::vector<Fd> clients;
  std::vector<std::jthread> threads;
  std::mutex mutex;
  std::condition_variable changed;
  int returned = 0;
  testing::internal::CaptureStdout();  // the "Accepted connection" lines
  for (int i = 0; i < count; ++i) {
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    clients.emplace_back(pair[0]);
    const timeval timeout{.tv_sec = 10, .tv_usec = 0};
    setsockopt(pair[0], SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    threads.emplace_back([&, sock = Fd(pair[1]), i]() mutable {
      process_connection(std::move(sock), "pair " + std::to_string(i), ServerOptions{});
      const std::scoped_lock lock(mutex);
      ++returned;
      changed.notify_all();
    });
  }
  // A reply from every thread: each is now in process_connection, blocked in recv.
  for (const Fd& client : clients) {
    ReplyBuffer buffer;
    ASSERT_TRUE(starts_with(ask(client.get(), buffer, "Q?"), "Q? "));
  }
  request_stop();
  bool all_returned = false;
  {
    std::unique_lock lock(mutex);
    all_returned =
        changed.wait_for(lock, std::chrono::seconds(5), [&] { return returned == count; });
    EXPECT_TRUE(all_returned) << returned << " of " << count << " threads returned";
  }
  if (!all_returned) clients.clear();  // an end of stream returns the threads left
  threads.clear();
  testing::internal::GetCapturedStdout();
}

namespace {
// The seam for epoll_ctl failures and doubled events: tests/shims/epoll_seam.cpp, preloaded into
// the servers started while it lives, with `variable` set to `mode`.
class EpollSeam {
 public:
  EpollSeam(const char* variable, const char* mode) : variable_(variable) {
    setenv("LD_PRELOAD", EPOLL_SEAM, 1);
    setenv(variable, mode, 1);
  }
  ~EpollSeam() {
    unsetenv("LD_PRELOAD");
    unsetenv(variable_);
  }
  EpollSeam(const EpollSeam&) = delete;
  EpollSeam& operator=(const EpollSeam&) = delete;

 private:
  const char* variable_;
};

// AddressSanitizer refuses to start unless its runtime comes before any preloaded library.
constexpr const char* preload_skip = "AddressSanitizer must be loaded before LD_PRELOAD's library";
}  // namespace

TEST(ServerEpollEdges, AClientEpollCannotWatchIsClosedAloneAndTheOthersAreServed) {
  if (under_address_sanitizer) GTEST_SKIP() << preload_skip;
  const EpollSeam seam("SPHINX_FAIL_EPOLL_CTL", "add");  // every second client
  Server server("server_epoll", {"--max-questions", "0"});
  std::vector<Fd> clients;  // all kept open, so that the server logs nothing else meanwhile
  for (int i = 0; i < 4; ++i) {
    clients.push_back(connect_port(server.port));
    const int sock = clients.back().get();
    const std::string peer = local_address(sock);
    EXPECT_EQ(server.read_line(), "Accepted connection from " + peer);
    if (i % 2 == 1) {
      EXPECT_EQ(server.read_line(),
                "Client " + peer + " error: epoll_ctl: No space left on device");
      const Received received = receive_all(sock);
      EXPECT_EQ(received.bytes, "");
      EXPECT_EQ(received.end, "end of stream");
    } else {
      ReplyBuffer buffer;
      EXPECT_TRUE(starts_with(ask(sock, buffer, "Q?"), "Q? ")) << i;
    }
  }
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(clients[0].get(), buffer, "Still there?"), "Still there? "));
}

TEST(ServerEpollEdges, AClientWhoseWatchCannotChangeIsClosedAloneAndTheOthersAreServed) {
  if (under_address_sanitizer) GTEST_SKIP() << preload_skip;
  const EpollSeam seam("SPHINX_FAIL_EPOLL_CTL",
                       "mod");  // every change of what epoll watches for a client
  Server server("server_epoll", {"--max-questions", "0"});
  const Fd asker = connect_port(server.port);
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from "));
  const Fd flooder = connect_port(server.port);
  const std::string peer = local_address(flooder.get());
  EXPECT_EQ(server.read_line(), "Accepted connection from " + peer);
  // Its replies pile up unread, so the server must watch it for writing too: the failing MOD.
  flood(flooder.get(), '?', std::size_t{4} * 1024 * 1024);
  EXPECT_EQ(server.read_line(), "Client " + peer + " error: epoll_ctl: Cannot allocate memory");
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(asker.get(), buffer, "Still there?"), "Still there? "));
  const Fd late = connect_port(server.port);
  ReplyBuffer late_buffer;
  EXPECT_TRUE(starts_with(ask(late.get(), late_buffer, "Late?"), "Late? "));
}

// Back-pressure stops answering a client whose replies pass 64 KiB unsent, and leaves its
// questions in the server's buffer: once the replies drain, those are answered too, though no
// new byte arrives to wake the server for them.
TEST(ServerEpollEdges, QuestionsLeftWaitingByBackPressureAreAnsweredWhenTheRepliesDrain) {
  Server server("server_epoll", {"--max-questions", "0", "--seed", "42"});
  const Fd sock = connect_port(server.port);
  set_timeouts(sock.get());
  constexpr std::size_t count = 100000;  // about 900 KB of replies
  const std::vector<std::string> replies =
      replies_with_seed_42(std::vector<std::string>(count, "?"));
  std::string expected;
  for (const std::string& reply : replies) expected += reply;
  std::jthread sender([&] {
    try {
      send_all(sock.get(), std::string(count, '?'));
    } catch (const std::system_error&) {  // a timeout: the replies are found missing below
    }
  });
  EXPECT_EQ(receive_expected(sock.get(), expected), "");
}
