// server_epoll: the lab's asynchronous server, written by hand. One thread, non-blocking
// sockets, and an epoll loop that serves whichever client is ready: what asyncio hides. This
// file is the lesson: the setup, the loop, and serve, which hands a ready client to its
// handlers. The handlers are in server_epoll/connection.cpp, the epoll plumbing in
// server_epoll/loop.cpp.
//
//   the lab's asyncio                    here
//   asyncio.start_server(handle_client)  get_server_socket, then the listener in the epoll set
//   handle_client(reader, writer)        a Connection in the table, at its descriptor
//   await reader.read()                  the descriptor is readable: on_readable
//   writer.write(reply)                  make_reply appends to Connection::outgoing
//   await writer.drain()                 EPOLLOUT: on_writable sends what send() could not take
//   writer.close()                       Stage::closing: the unsent replies, then a lingering close
//   loop.run_forever()                   the while loop in main
#include <fcntl.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "server_epoll/connection.hpp"
#include "server_epoll/loop.hpp"

namespace {
// Accepts per wake-up. A burst of connects must not hold up the clients already connected: the
// clients left in the backlog are accepted on the next wake-ups, between the others' turns, as
// Redis caps its accepts (MAX_ACCEPTS_PER_CALL) and nginx accepts one per event unless told to
// multi_accept. Each accept and its log line take a few microseconds, so 64 of them delay a
// ready client by well under a millisecond.
constexpr int MAX_ACCEPTS_PER_WAKEUP = 64;
// Out of descriptors, the listener is paused for this long, instead of spinning on it.
constexpr std::chrono::milliseconds ACCEPT_PAUSE{100};

// The connections, indexed by descriptor (the lab's "dictionary of file handles to sockets"):
// descriptors are small integers, so the table is an array, grown as they come.
using Table = std::vector<std::unique_ptr<Connection>>;

// The listener, and while the server is out of descriptors, when it accepts again.
struct Listener {
  Fd sock;
  std::optional<Clock::time_point> paused_until{};
};

// The lingering connections' deadlines, the earliest first: each is LINGER_TIME after its start,
// so they end in the order they start. One whose connection has gone meanwhile is skipped.
using LingerDeadlines = std::deque<std::pair<Clock::time_point, int>>;

bool out_of_descriptors(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

// Stage 3 without blocking: accepts the clients waiting in the backlog into the table, at most
// MAX_ACCEPTS_PER_WAKEUP. Out of descriptors, it pauses the listener: the clients wait in the
// backlog, and the loop wakes after ACCEPT_PAUSE to try again. A client epoll cannot watch (out
// of kernel memory, or fs.epoll.max_user_watches reached) is that client's error: logged and
// closed.
void on_acceptable(EventLoop& loop, Listener& listener, Table& connections,
                   const ServerOptions& options) {
  for (int accepted = 0; accepted < MAX_ACCEPTS_PER_WAKEUP; ++accepted) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    Fd sock(accept4(listener.sock.get(), reinterpret_cast<sockaddr*>(&address), &length,
                    SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!sock) {
      if (out_of_descriptors(errno)) {
        loop.modify(listener.sock.get(), 0);
        listener.paused_until = Clock::now() + ACCEPT_PAUSE;
      }
      return;
    }
    const std::string peer = format_address(reinterpret_cast<sockaddr*>(&address));
    log_line("Accepted connection from " + peer);
    try {
      loop.add(sock.get(), events(Want::read));
    } catch (const std::system_error& error) {
      log_line("Client " + peer + " error: " + error.what());
      continue;  // closes it
    }
    const auto fd = static_cast<std::size_t>(sock.get());
    if (fd >= connections.size()) connections.resize(fd + 1);
    connections[fd] = std::make_unique<Connection>(std::move(sock), peer, options.seed);
  }
}

// A client's descriptor is ready: its handler, then what it waits for next. An epoll_ctl that
// fails for one client closes that client, never the server.
void serve(EventLoop& loop, std::unique_ptr<Connection>& slot, std::uint32_t ready,
           const ServerOptions& options, std::span<char> buffer,
           LingerDeadlines& linger_deadlines) {
  Connection& c = *slot;
  const Stage before = c.stage;
  const Want want = on_ready(c, ready, options, buffer);
  if (want == Want::close) {
    slot.reset();  // closing the descriptor takes it out of the epoll set too
    return;
  }
  if (want != c.watched) {
    try {
      loop.modify(c.sock.get(), events(want));
    } catch (const std::system_error& error) {
      log_failure(c, error);
      slot.reset();
      return;
    }
    c.watched = want;
  }
  if (c.stage == Stage::lingering && before != Stage::lingering) {
    linger_deadlines.emplace_back(c.linger_until, c.sock.get());
  }
}

// When the loop must wake with nothing ready: the earliest deadline, if any.
std::optional<Clock::time_point> next_deadline(const Listener& listener,
                                               const LingerDeadlines& linger_deadlines) {
  std::optional<Clock::time_point> next = listener.paused_until;
  if (!linger_deadlines.empty() && (!next || linger_deadlines.front().first < *next)) {
    next = linger_deadlines.front().first;
  }
  return next;
}

// What is due: the paused listener accepts again; a connection that has lingered LINGER_TIME
// closes.
void on_deadlines(EventLoop& loop, Listener& listener, Table& connections,
                  LingerDeadlines& linger_deadlines) {
  const Clock::time_point now = Clock::now();
  if (listener.paused_until && *listener.paused_until <= now) {
    loop.modify(listener.sock.get(), EPOLLIN);
    listener.paused_until.reset();
  }
  for (; !linger_deadlines.empty() && linger_deadlines.front().first <= now;
       linger_deadlines.pop_front()) {
    auto& slot = connections[static_cast<std::size_t>(linger_deadlines.front().second)];
    if (slot && slot->stage == Stage::lingering &&
        slot->linger_until == linger_deadlines.front().first) {
      slot.reset();
    }
  }
}

// The listener never blocks the loop: accept4 returns EAGAIN once the backlog is empty.
void set_non_blocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    throw std::system_error(errno, std::generic_category(), "fcntl O_NONBLOCK");
  }
}
}  // namespace

int main(int argc, char* argv[]) try {
  const ServerOptions options =
      parse_server_options(argc, argv, "server_epoll", {.max_questions = 10});
  EventLoop loop;  // first: a SIGINT or SIGTERM from now on comes through the loop
  Listener listener{get_server_socket(options.host, options.port)};  // stages 1-2
  set_non_blocking(listener.sock.get());
  loop.add(listener.sock.get(), EPOLLIN);

  Table connections;
  LingerDeadlines linger_deadlines;
  std::array<char, std::size_t{16} * 1024> buffer{};  // every recv lands here first
  while (true) {
    for (const epoll_event& event : loop.wait(next_deadline(listener, linger_deadlines))) {
      const int fd = event.data.fd;
      if (loop.is_signal(event)) {
        connections.clear();  // closes every connection
        log_line("Shutting down");
        return 0;
      }
      if (fd == listener.sock.get()) {
        on_acceptable(loop, listener, connections, options);
        continue;
      }
      auto& slot = connections[static_cast<std::size_t>(fd)];
      // A handler earlier in this batch may have closed this connection (one that closes
      // others, as an idle timeout would): its slot is empty, as Redis checks the mask of
      // events[fd] and libuv its watchers[fd]. Had it been reused by an accept since, the
      // event reaches the new connection: harmless, its recv or send returns EAGAIN.
      if (slot) serve(loop, slot, event.events, options, buffer, linger_deadlines);
    }
    on_deadlines(loop, listener, connections, linger_deadlines);
  }
} catch (const std::exception& error) {
  return fail(error);
}
