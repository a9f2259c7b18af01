// What no client may do to any server: crash it, make it spin, leak a descriptor or memory,
// lose or corrupt another client's reply. (Making server_simple wait is the lab's lesson, not a
// defect: those tests are in patterns_test.cpp.)
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <csignal>

#include "common/net.hpp"
#include "tests/support.hpp"

namespace {
void expect_serves_a_new_client(const Server& server) {
  const Fd sock = connect_port(server.port);
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(sock.get(), buffer, "Still there?"), "Still there? "))
      << server.program << " does not answer a new client";
}

// Closes with a reset instead of an end of stream (SO_LINGER with a zero timeout).
void reset(Fd& sock) {
  const linger abort{.l_onoff = 1, .l_linger = 0};
  setsockopt(sock.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  sock.reset();
}

}  // namespace

class EveryServer : public testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Servers, EveryServer, testing::ValuesIn(all_servers()), server_name);

TEST_P(EveryServer, AnswersThreeQuestionsFromOnePacketInOrder) {
  Server server(GetParam(), {"--seed", "42"});
  const Fd sock = connect_port(server.port);
  send_all(sock.get(), "A?B.?C?");
  ReplyBuffer buffer;
  EXPECT_EQ(read_reply(sock.get(), buffer, "A?"), "A? Maybe.");
  EXPECT_EQ(read_reply(sock.get(), buffer, "B.?"), "B.? Maybe.");
  EXPECT_EQ(read_reply(sock.get(), buffer, "C?"), "C? Very likely.");
}

TEST_P(EveryServer, AnswersAQuestionOfExactlyTheMaximumLength) {
  Server server(GetParam());
  const Fd sock = connect_port(server.port);
  const std::string longest = std::string(MAX_QUESTION - 1, 'x') + "?";
  ReplyBuffer buffer;
  EXPECT_TRUE(starts_with(ask(sock.get(), buffer, longest), longest + " "));
}

TEST_P(EveryServer, TenMegabytesWithoutAQuestionMarkDoNotGrowTheServer) {
  Server server(GetParam());
  const long before = peak_rss_kib(server.pid());
  {
    Fd sock = connect_port(server.port);
    flood(sock.get(), 'x', std::size_t{10} * 1024 * 1024);
    EXPECT_EQ(read_until_close(sock.get()), "");  // closed after 4096 bytes
  }
  EXPECT_TRUE(starts_with(server.read_line(), "Accepted connection from"));
  const std::optional<std::string> line = server.read_line();
  EXPECT_NE(line.value_or("").find(" error: question longer than 4096 bytes"), std::string::npos)
      << line.value_or("");
  EXPECT_LT(peak_rss_kib(server.pid()) - before, sanitizer_memory_factor * 4096)
      << "KiB more at the peak";
  expect_serves_a_new_client(server);
}

TEST_P(EveryServer, SurvivesResetsMidQuestionAndMidReply) {
  Server server(GetParam());
  for (int i = 0; i < 20; ++i) {
    Fd midway = connect_port(server.port);
    send_all(midway.get(), "Will I be hap");
    reset(midway);
    Fd asked = connect_port(server.port);
    send_all(asked.get(), std::string(MAX_QUESTION - 1, 'r') + "?");  // a long reply to cut short
    reset(asked);
  }
  expect_serves_a_new_client(server);
}

TEST_P(EveryServer, SurvivesAThousandConnectionsOpenedAndClosedInARow) {
  Server server(GetParam());
  const int baseline = fd_count(server.pid());
  for (int i = 0; i < 1000; ++i) connect_port(server.port);
  expect_serves_a_new_client(server);
  EXPECT_EQ(fd_count_settled(server.pid(), baseline), baseline);
}

TEST_P(EveryServer, LeaksNoDescriptorAfterTheWholeBattery) {
  Server server(GetParam(), {"--max-questions", "2"});
  const int baseline = fd_count(server.pid());
  for (int i = 0; i < 10; ++i) {
    Fd sock = connect_port(server.port);
    if (i % 5 == 0) send_all(sock.get(), "1?2?3?");                        // over the limit
    if (i % 5 == 1) send_all(sock.get(), std::string(MAX_QUESTION, 'y'));  // too long
    if (i % 5 == 2) send_all(sock.get(), std::string("\0\xff\x1b", 3));    // garbage...
    if (i % 5 == 2 || i % 5 == 4) shutdown(sock.get(), SHUT_WR);  // ...or nothing, then EOF
    if (i % 5 == 3) send_all(sock.get(), "half");
    if (i % 5 == 3) reset(sock);  // a reset mid-question
    if (sock) read_until_close(sock.get());
  }
  expect_serves_a_new_client(server);
  EXPECT_EQ(fd_count_settled(server.pid(), baseline), baseline);
}

TEST_P(EveryServer, OutOfDescriptorsItWaitsWithoutSpinningAndRecovers) {
  if (GetParam() == "server_epoll" && !server_args().empty()) {
    GTEST_SKIP() << server_args_skip << " (it checks the waiting clients are served in the order "
                 << "they came, which one backlog per listener does not keep)";
  }
  // 32 descriptors for the whole server, 60 clients, and (server_threads) more threads than
  // descriptors, so that both accepting patterns really run out.
  const bool pool = GetParam() == "server_threads";
  Server server(GetParam(),
                pool ? std::vector<std::string>{"--threads", "40"} : std::vector<std::string>{},
                32);
  std::vector<Fd> clients;
  for (int i = 0; i < 60; ++i) {
    clients.push_back(connect_port(server.port));
    send_all(clients.back().get(), "Q" + std::to_string(i) + "?");
  }
  // The server holds what it can; the last client waits. Meanwhile it must not burn the CPU.
  const double cpu_before = cpu_seconds(server.pid());
  EXPECT_FALSE(readable_within(clients.back().get(), 500ms));
  EXPECT_LT(cpu_seconds(server.pid()) - cpu_before, 0.2) << "CPU seconds in half a second";
  // As clients leave, the ones waiting are served, in the order they came.
  for (int i = 0; i < 60; ++i) {
    ReplyBuffer buffer;
    const std::string question = "Q" + std::to_string(i) + "?";
    ASSERT_TRUE(starts_with(read_reply(clients[i].get(), buffer, question), question + " ")) << i;
    clients[i].reset();
  }
  expect_serves_a_new_client(server);
}

TEST_P(EveryServer, SigtermWithManyClientsAndRepliesInFlightExitsPromptly) {
  if (tsan_cannot_signal(GetParam())) GTEST_SKIP() << "see tsan_cannot_signal in tests/support.hpp";
  Server server(GetParam(), {"--max-questions", "0"});
  std::vector<Fd> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(connect_port(server.port));
    if (i % 2 == 0) send_all(clients.back().get(), "Q?Q?Q?Q?Q?Q");  // replies waiting, no reader
  }
  Fd flooder = connect_port(server.port);
  flood(flooder.get(), '?', std::size_t{4} * 1024 * 1024);  // its server thread blocks in send
  server.send_signal(SIGTERM);
  EXPECT_EQ(server.wait_exit(stop_timeout), 0);
  EXPECT_EQ(last_line(server.out()), "Shutting down");
}
