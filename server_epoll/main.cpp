// server_epoll: the lab's asynchronous server, written by hand. One thread, non-blocking
// sockets, and an epoll loop that serves whichever client is ready: what asyncio hides.
//
//   the lab's asyncio                    here
//   asyncio.start_server(handle_client)  get_server_socket, then epoll_ctl(ADD) of the listener
//   handle_client(reader, writer)        a Connection in the table `connections`
//   await reader.read()                  the descriptor is readable: on_readable
//   writer.write(reply)                  make_reply appends to Connection::unsent
//   await writer.drain()                 EPOLLOUT: on_writable sends what send() could not take
//   writer.close()                       Stage::closing: the unsent replies, then a lingering close
//   loop.run_forever()                   the while loop around epoll_wait
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <system_error>
#include <unordered_map>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

namespace {
using Clock = std::chrono::steady_clock;

// Back-pressure: once a client's replies pile up unsent past this, the server stops answering
// it (its complete questions wait in the framer) and stops reading from it until they drain,
// so a client that never reads cannot grow the server's memory.
constexpr std::size_t MAX_UNSENT = std::size_t{64} * 1024;
// Out of descriptors, the listener is not watched for this long, instead of spinning.
constexpr std::chrono::milliseconds ACCEPT_PAUSE{100};

// Every handler returns what its connection wants next. The loop asks epoll for that and calls
// epoll_ctl only when it differs from what epoll already watches, so a steady exchange costs
// one recv and one send per question, and no epoll_ctl.
enum class Want : std::uint32_t {
  read = EPOLLIN,                   // more questions
  write = EPOLLOUT,                 // to finish sending replies, reading nothing meanwhile
  read_write = EPOLLIN | EPOLLOUT,  // both
  close = 0,                        // done: the handler has logged why
};

// A close the server decides on (the question limit, a question it will not answer) lingers,
// as linger_before_close does for the blocking servers, but without blocking the loop.
enum class Stage {
  serving,    // answering questions
  closing,    // answering no more: sending what is unsent, then the end of stream
  lingering,  // reading and discarding until the client's end of stream, LINGER_BYTES or
              // the deadline, whichever comes first
};

// One client: what handle_client's local variables are in the lab's asyncio server.
struct Connection {
  Connection(Fd socket, std::string address) : sock(std::move(socket)), peer(std::move(address)) {}
  Fd sock;
  std::string peer;
  Framer unread{MAX_QUESTION, "question"};  // bytes of questions not yet answered
  std::string unsent;                       // replies send() has not taken yet
  unsigned answered = 0;
  bool peer_closed = false;  // the client sent its end of stream
  // Made at the first question: a std::mt19937 is 5,000 bytes, which 10,000 idle clients
  // should not cost.
  std::unique_ptr<std::mt19937> gen;
  Want watched = Want::read;  // what epoll watches for now
  Stage stage = Stage::serving;
  std::size_t discarded = 0;  // lingering: bytes read and thrown away
  Clock::time_point linger_until;
};

// The lingering connections' deadlines, oldest first: each is LINGER_TIME after its start, so
// the order they start in is the order they end in. An entry whose descriptor has been closed
// meanwhile (or reused) no longer matches its connection's deadline and is skipped.
using Deadlines = std::deque<std::pair<Clock::time_point, int>>;

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

// Answers the complete questions the framer holds, until the limit or until the unsent replies
// pass MAX_UNSENT. A question the server will not answer (too long, or cut short by the client's
// end of stream) is logged, and the connection closes once the replies made before it are out.
void answer(Connection& c, const ServerOptions& options) {
  try {
    while (c.stage == Stage::serving && !limit_reached(c, options) &&
           c.unsent.size() <= MAX_UNSENT) {
      const std::optional<std::string_view> question = c.unread.next('?');
      if (!question) {
        if (c.peer_closed && !c.unread.pending().empty()) {
          throw closed_mid_message(c.unread.pending());
        }
        return;
      }
      if (!c.gen) c.gen = std::make_unique<std::mt19937>(make_generator(options.seed));
      make_reply(*question, *c.gen, c.unsent);
      ++c.answered;
    }
  } catch (const std::exception& error) {
    log_line("Client " + c.peer + " error: " + error.what());
    c.stage = Stage::closing;
  }
}

// Answers what it may of the complete questions, sends what it can of the unsent replies
// without blocking, then says what comes next.
Want on_writable(Connection& c, const ServerOptions& options, Deadlines& deadlines) {
  answer(c, options);
  if (!c.unsent.empty()) {
    const ssize_t sent = send(c.sock.get(), c.unsent.data(), c.unsent.size(), MSG_NOSIGNAL);
    if (sent >= 0) {
      c.unsent.erase(0, static_cast<std::size_t>(sent));
    } else if (errno != EAGAIN && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "send");
    }
  }
  answer(c, options);  // what waited for the replies to drain: sent at the next EPOLLOUT
  if (!c.unsent.empty()) {
    const bool more_to_read = c.stage == Stage::serving && !limit_reached(c, options) &&
                              !c.peer_closed && c.unsent.size() <= MAX_UNSENT;
    return more_to_read ? Want::read_write : Want::write;
  }
  if (c.stage == Stage::serving) {
    if (c.peer_closed) {
      log_line("Client " + c.peer + " closed the connection");
      return Want::close;
    }
    if (!limit_reached(c, options)) return Want::read;
    log_line("Closing connection to " + c.peer + " after " + std::to_string(c.answered) +
             " questions");
    c.stage = Stage::closing;
  }
  if (c.stage == Stage::closing) {  // every reply is out: the end of stream, then the lingering
    if (c.peer_closed || shutdown(c.sock.get(), SHUT_WR) != 0) return Want::close;
    c.stage = Stage::lingering;
    c.linger_until = Clock::now() + LINGER_TIME;
    deadlines.emplace_back(c.linger_until, c.sock.get());
  }
  return Want::read;
}

// Reads what has arrived, answers every complete question in it, and sends the replies.
Want on_readable(Connection& c, const ServerOptions& options, std::span<char> buffer,
                 Deadlines& deadlines) {
  const ssize_t received = recv(c.sock.get(), buffer.data(), buffer.size(), 0);
  if (received < 0) {
    if (errno == EAGAIN || errno == EINTR) return c.watched;
    if (c.stage == Stage::lingering) return Want::close;  // nothing left to deliver
    throw std::system_error(errno, std::generic_category(), "recv");
  }
  if (c.stage == Stage::lingering) {
    c.discarded += static_cast<std::size_t>(received);
    return received == 0 || c.discarded >= LINGER_BYTES ? Want::close : Want::read;
  }
  if (received == 0) c.peer_closed = true;  // a half-close: it still gets what it asked for
  c.unread.append({buffer.data(), static_cast<std::size_t>(received)});
  return on_writable(c, options, deadlines);  // which answers what is complete
}

// Stage 3 without blocking: accepts every client waiting in the backlog. False when out of
// descriptors: the listener stays readable, so the loop must stop watching it for a while.
// A client epoll cannot watch (out of kernel memory, or fs.epoll.max_user_watches reached) is
// that client's error: it is logged and closed, and the server goes on.
bool accept_clients(int epoll, int listener, std::unordered_map<int, Connection>& connections) {
  while (true) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    Fd sock(accept4(listener, reinterpret_cast<sockaddr*>(&address), &length,
                    SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!sock) return errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM;
    const int fd = sock.get();
    const std::string peer = format_address(reinterpret_cast<sockaddr*>(&address));
    log_line("Accepted connection from " + peer);
    try {
      watch(epoll, EPOLL_CTL_ADD, fd, Want::read);
    } catch (const std::system_error& error) {
      log_line("Client " + peer + " error: " + error.what());
      continue;  // closes it
    }
    connections.try_emplace(fd, std::move(sock), peer);
  }
}

// How long epoll_wait may wait: until the nearest deadline, or for ever (-1) if none.
int wait_timeout(std::optional<Clock::time_point> accept_again, const Deadlines& deadlines) {
  std::optional<Clock::time_point> nearest = accept_again;
  if (!deadlines.empty() && (!nearest || deadlines.front().first < *nearest)) {
    nearest = deadlines.front().first;
  }
  if (!nearest) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*nearest - Clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
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
  Deadlines deadlines;                              // of the lingering connections
  std::optional<Clock::time_point> accept_again;    // out of descriptors: when to try again
  std::array<epoll_event, 256> ready{};
  std::array<char, std::size_t{16} * 1024> buffer{};  // every recv lands here first
  while (true) {
    const int count =
        epoll_wait(epoll.get(), ready.data(), ready.size(), wait_timeout(accept_again, deadlines));
    if (count < 0 && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "epoll_wait");
    }
    const Clock::time_point now = Clock::now();
    if (accept_again && now >= *accept_again) {
      watch(epoll.get(), EPOLL_CTL_MOD, listener.get(), Want::read);
      accept_again.reset();
    }
    while (!deadlines.empty() && deadlines.front().first <= now) {
      const auto found = connections.find(deadlines.front().second);
      if (found != connections.end() && found->second.stage == Stage::lingering &&
          found->second.linger_until == deadlines.front().first) {
        connections.erase(found);  // lingered long enough
      }
      deadlines.pop_front();
    }
    for (int i = 0; i < count; ++i) {
      const int fd = ready[i].data.fd;
      if (fd == signals.get()) {
        connections.clear();  // closes every connection
        log_line("Shutting down");
        return 0;
      }
      if (fd == listener.get()) {
        if (!accept_clients(epoll.get(), fd, connections)) {
          watch(epoll.get(), EPOLL_CTL_MOD, fd, Want::close);  // pause: no events
          accept_again = Clock::now() + ACCEPT_PAUSE;
        }
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
        want = readable && c.watched != Want::write ? on_readable(c, options, buffer, deadlines)
                                                    : on_writable(c, options, deadlines);
        if (want != Want::close && want != c.watched) {
          watch(epoll.get(), EPOLL_CTL_MOD, fd, want);
          c.watched = want;
        }
      } catch (const std::exception& error) {
        log_line("Client " + c.peer + " error: " + error.what());
        want = Want::close;
      }
      if (want == Want::close) {
        connections.erase(found);  // closing the descriptor also takes it out of the epoll set
      }
    }
  }
} catch (const std::exception& error) {
  return fail(error);
}
