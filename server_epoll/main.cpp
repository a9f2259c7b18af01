// server_epoll: the lab's asynchronous server, written by hand. One thread, non-blocking
// sockets, and an epoll loop that serves whichever client is ready: what asyncio hides.
//
//   the lab's asyncio                    here
//   asyncio.start_server(handle_client)  get_server_socket, then epoll_ctl(ADD) of the listener
//   handle_client(reader, writer)        a Connection in the table `connections`
//   await reader.read()                  the descriptor is readable: on_readable
//   writer.write(reply)                  make_reply appends to Connection::unsent
//   await writer.drain()                 EPOLLOUT: on_writable sends what send() could not take
//   loop.run_forever()                   the while loop around epoll_wait
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <memory>
#include <span>
#include <system_error>
#include <unordered_map>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

namespace {
// Back-pressure: a client whose replies pile up unsent past this is not read from until they
// drain, so a client that never reads cannot grow the server's memory.
constexpr std::size_t MAX_UNSENT = std::size_t{64} * 1024;

// Every handler returns what its connection wants next. The loop asks epoll for that and calls
// epoll_ctl only when it differs from what epoll already watches, so a steady exchange costs
// one recv and one send per question, and no epoll_ctl.
enum class Want : std::uint32_t {
  read = EPOLLIN,                   // more questions
  write = EPOLLOUT,                 // to finish sending replies, reading nothing meanwhile
  read_write = EPOLLIN | EPOLLOUT,  // both
  close = 0,                        // done: the handler has logged why
};

// One client: what handle_client's local variables are in the lab's asyncio server.
struct Connection {
  Connection(Fd socket, std::string address, std::optional<std::uint32_t> seed)
      : sock(std::move(socket)), peer(std::move(address)), sequence(seed) {}
  Fd sock;
  std::string peer;
  Framer unread{MAX_QUESTION, "question"};  // bytes of questions not yet complete
  std::string unsent;                       // replies send() has not taken yet
  unsigned answered = 0;
  bool peer_closed = false;  // the client sent its end of stream
  ReplySequence sequence;
  Want watched = Want::read;  // what epoll watches for now
};

bool limit_reached(const Connection& c, const ServerOptions& options) {
  return options.max_questions != 0 && c.answered == options.max_questions;
}

Fd make_epoll_fd() {
  Fd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  return epoll;
}

void watch(int epoll, int op, int fd, Want want) {
  epoll_event event{.events = static_cast<std::uint32_t>(want), .data = {.fd = fd}};
  if (epoll_ctl(epoll, op, fd, &event) != 0) {
    throw std::system_error(errno, std::generic_category(), "epoll_ctl");
  }
}

// SIGINT and SIGTERM as a readable descriptor, so they arrive through the same loop.
Fd make_signal_fd() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  Fd fd(signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd) throw std::system_error(errno, std::generic_category(), "signalfd");
  return fd;
}

// Sends what it can of the unsent replies without blocking, then says what comes next.
Want on_writable(Connection& c, const ServerOptions& options) {
  if (!c.unsent.empty()) {
    const ssize_t sent = send(c.sock.get(), c.unsent.data(), c.unsent.size(), MSG_NOSIGNAL);
    if (sent >= 0) {
      c.unsent.erase(0, static_cast<std::size_t>(sent));
    } else if (errno != EAGAIN && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "send");
    }
  }
  if (!c.unsent.empty()) {
    const bool more_to_read = !limit_reached(c, options) && !c.peer_closed;
    return more_to_read && c.unsent.size() <= MAX_UNSENT ? Want::read_write : Want::write;
  }
  if (limit_reached(c, options)) {
    log_line("Closing connection to " + c.peer + " after " + std::to_string(c.answered) +
             " questions");
    return Want::close;
  }
  if (c.peer_closed) {
    log_line("Client " + c.peer + " closed the connection");
    return Want::close;
  }
  return Want::read;
}

// Reads what has arrived, answers every complete question in it, and sends the replies.
Want on_readable(Connection& c, const ServerOptions& options, std::span<char> buffer) {
  const ssize_t received = recv(c.sock.get(), buffer.data(), buffer.size(), 0);
  if (received < 0) {
    if (errno == EAGAIN || errno == EINTR) return c.watched;
    throw std::system_error(errno, std::generic_category(), "recv");
  }
  if (received == 0) {
    if (!c.unread.pending().empty()) {
      throw closed_mid_message(c.unread.pending());
    }
    c.peer_closed = true;  // a half-close: it still gets the replies it asked for
  }
  c.unread.append({buffer.data(), static_cast<std::size_t>(received)});
  while (!limit_reached(c, options)) {
    const std::optional<std::string_view> question = c.unread.next('?');
    if (!question) break;
    make_reply(*question, c.sequence, c.unsent);
    ++c.answered;
  }
  return on_writable(c, options);
}

// Stage 3 without blocking: accepts every client waiting in the backlog. False when out of
// descriptors: the listener stays readable, so the loop must stop watching it for a while.
bool accept_clients(int epoll, int listener, std::unordered_map<int, Connection>& connections,
                    std::optional<std::uint32_t> seed) {
  while (true) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    Fd sock(accept4(listener, reinterpret_cast<sockaddr*>(&address), &length,
                    SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!sock) return errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM;
    const int fd = sock.get();
    const std::string peer = format_address(reinterpret_cast<sockaddr*>(&address));
    watch(epoll, EPOLL_CTL_ADD, fd, Want::read);
    connections.try_emplace(fd, std::move(sock), peer, seed);
    log_line("Accepted connection from " + peer);
  }
}
}  // namespace

int main(int argc, char* argv[]) try {
  const ServerOptions options =
      parse_server_options(argc, argv, "server_epoll", {.max_questions = 10});
  const Fd signals = make_signal_fd();
  const Fd epoll = make_epoll_fd();
  const Fd listener = get_server_socket(options.host, options.port);  // stages 1-2
  fcntl(listener.get(), F_SETFL, O_NONBLOCK);
  watch(epoll.get(), EPOLL_CTL_ADD, listener.get(), Want::read);
  watch(epoll.get(), EPOLL_CTL_ADD, signals.get(), Want::read);

  std::unordered_map<int, Connection> connections;  // the lab's "dictionary of file handles"
  std::array<epoll_event, 256> ready{};
  std::array<char, std::size_t{16} * 1024> buffer{};  // every recv lands here first
  bool accepting = true;
  while (true) {
    // Out of descriptors, the loop wakes every 100 ms to try accepting again, instead of spinning.
    const int count = epoll_wait(epoll.get(), ready.data(), ready.size(), accepting ? -1 : 100);
    if (count < 0 && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "epoll_wait");
    }
    if (!accepting) {
      watch(epoll.get(), EPOLL_CTL_MOD, listener.get(), Want::read);
      accepting = true;
    }
    for (int i = 0; i < count; ++i) {
      const int fd = ready[i].data.fd;
      if (fd == signals.get()) {
        connections.clear();  // closes every connection
        log_line("Shutting down");
        return 0;
      }
      if (fd == listener.get()) {
        accepting = accept_clients(epoll.get(), fd, connections, options.seed);
        if (!accepting) watch(epoll.get(), EPOLL_CTL_MOD, fd, Want::close);  // pause: no events
        continue;
      }
      const auto found = connections.find(fd);
      // Closed earlier in this batch. (If accept reused its number meanwhile, the new client
      // gets a spurious wake-up, which its recv answers with EAGAIN.)
      if (found == connections.end()) continue;
      Connection& c = found->second;
      Want want = Want::close;
      try {
        const bool readable = (ready[i].events & EPOLLIN) || !(ready[i].events & EPOLLOUT);
        want = readable && c.watched != Want::write ? on_readable(c, options, buffer)
                                                    : on_writable(c, options);
      } catch (const std::exception& error) {
        log_line("Client " + c.peer + " error: " + error.what());
      }
      if (want == Want::close) {
        connections.erase(found);  // closing the descriptor also takes it out of the epoll set
      } else if (want != c.watched) {
        watch(epoll.get(), EPOLL_CTL_MOD, fd, want);
        c.watched = want;
      }
    }
  }
} catch (const std::exception& error) {
  return fail(error);
}
