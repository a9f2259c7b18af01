// libFuzzer target for server_epoll's handlers (server_epoll/connection.cpp). Each input is a
// script: a few clients, each on a socketpair with the smallest buffers the kernel allows, send
// bytes split anywhere, read some bytes, stall, half-close or reset, between the server's turns
// (the loop's work for one ready connection: poll stands in for epoll_wait, on_ready is called as
// serve calls it). Then every client still there half-closes and reads to the end.
//
// The oracle, from the seed: every byte a client reads is its own questions with their replies,
// in order (the k-th reply is replies[x_k % 5], x_k the k-th output of std::mt19937(seed)); a
// client that did not reset gets a reply to every question it sent, up to the limit or to a
// question over MAX_QUESTION bytes, and nothing after; every connection ends closed. ASan finds
// what leaks.
//
// Input: 4 header bytes (the question limit, the seed, the server's recv size, the number of
// clients), then two bytes per action: what and which client, and a parameter.
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "server_epoll/connection.hpp"
#include "tests/epoll_turn.hpp"

namespace {
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}

struct Client {
  Fd sock;                             // the client's end
  std::unique_ptr<Connection> server;  // the server's end, until the server closes it
  std::string sent;                    // every byte the client's send() took
  std::string received;
  bool half_closed = false;
  bool reset = false;  // closed its end, reading nothing more
  bool end_of_stream = false;
};

// What the client must have read by the end: a reply to each question it sent, up to `limit`
// (0: none) or to a question the server will not answer.
std::string transcript(const std::string& sent, unsigned limit, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::string expected;
  std::size_t start = 0;
  for (unsigned answered = 0; limit == 0 || answered < limit; ++answered) {
    const std::size_t end = sent.find('?', start);
    if (end == std::string::npos || end - start + 1 > MAX_QUESTION) break;
    expected.append(sent, start, end - start + 1).append(" ").append(replies[gen() % 5]);
    start = end + 1;
  }
  return expected;
}

void send_bytes(Client& client, const std::string& bytes) {
  if (client.half_closed || client.reset) return;
  const ssize_t sent =
      send(client.sock.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent > 0) client.sent.append(bytes, 0, static_cast<std::size_t>(sent));
}

void read_bytes(Client& client, std::size_t most) {
  if (client.reset || client.end_of_stream) return;
  static std::array<char, std::size_t{64} * 1024> buffer;
  const ssize_t received =
      recv(client.sock.get(), buffer.data(), std::min(most, buffer.size()), MSG_DONTWAIT);
  if (received == 0 || (received < 0 && errno != EAGAIN)) client.end_of_stream = true;
  if (received > 0) client.received.append(buffer.data(), static_cast<std::size_t>(received));
}

// The server's turn for this client's connection, until the handlers close it.
void server_turn(Client& client, const ServerOptions& options, std::span<char> buffer) {
  if (client.server && take_turn(*client.server, options, buffer) == Want::close) {
    client.server.reset();
  }
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  check(std::freopen("/dev/null", "w", stdout) != nullptr);  // the log lines
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  ServerOptions options;
  options.max_questions = data[0] % 6;  // 0: no limit, so that replies pile up
  options.seed = data[1];
  std::vector<char> buffer(data[2] == 0 ? 16384 : data[2] % 64 + 1);  // the server's recv size
  std::vector<Client> clients(data[3] % 3 + 1);
  for (std::size_t i = 0; i < clients.size(); ++i) {
    int ends[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0);
    for (const int end : ends) {
      const int smallest = 1;  // the kernel rounds it up to its minimum
      setsockopt(end, SOL_SOCKET, SO_SNDBUF, &smallest, sizeof smallest);
      setsockopt(end, SOL_SOCKET, SO_RCVBUF, &smallest, sizeof smallest);
    }
    clients[i].sock.reset(ends[0]);
    clients[i].server =
        std::make_unique<Connection>(Fd(ends[1]), "client " + std::to_string(i), options.seed);
  }

  for (std::size_t at = 4; at + 1 < size; at += 2) {
    Client& client = clients[(data[at] >> 3) % clients.size()];
    const std::uint8_t parameter = data[at + 1];
    switch (data[at] & 7) {
      case 0: {  // a few bytes of the input, often a '?'
        std::string bytes;
        for (std::size_t k = 0; k <= parameter % 16 && at + 2 + k < size; ++k) {
          const auto byte = static_cast<char>(data[at + 2 + k]);
          bytes += (byte & 3) == 0 ? '?' : byte;
        }
        send_bytes(client, bytes);
        break;
      }
      case 1:
        read_bytes(client, parameter + std::size_t{1});
        break;
      case 2:
        if (!client.reset && !client.half_closed) shutdown(client.sock.get(), SHUT_WR);
        client.half_closed = true;
        break;
      case 3:  // a close with replies unread: the server's recv fails with ECONNRESET
        client.sock.reset();
        client.reset = true;
        break;
      case 4:
        server_turn(client, options, buffer);
        break;
      case 5:  // the client stalls while the server takes turns
        for (int turn = 0; turn <= parameter % 8; ++turn) {
          for (Client& each : clients) server_turn(each, options, buffer);
        }
        break;
      case 6: {  // one of the lab's questions, many times: replies pile up, sends are partial
        std::string bytes;
        for (int k = 0; k <= parameter / 4; ++k) bytes += questions[parameter % 3];
        send_bytes(client, bytes);
        break;
      }
      default:  // a question at the limit, or one byte over it
        send_bytes(client, std::string(MAX_QUESTION - 1 + parameter % 2, 'x'));
        break;
    }
  }

  // The end: every client half-closes and reads until the server has closed.
  for (Client& client : clients) {
    if (!client.reset && !client.half_closed) shutdown(client.sock.get(), SHUT_WR);
    client.half_closed = true;
  }
  for (int round = 0;; ++round) {
    bool open = false;
    for (Client& client : clients) {
      server_turn(client, options, buffer);
      read_bytes(client, std::size_t{64} * 1024);
      open = open || client.server || (!client.reset && !client.end_of_stream);
    }
    if (!open) break;
    check(round < 100000);  // a connection that never ends
  }
  for (const Client& client : clients) {
    const std::string expected = transcript(client.sent, options.max_questions, *options.seed);
    if (client.reset) {
      check(expected.compare(0, client.received.size(), client.received) == 0);
    } else {
      check(client.received == expected);
    }
  }
  return 0;
}
