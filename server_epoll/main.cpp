// server_epoll: the lab's asynchronous server, written by hand. One thread, non-blocking
// sockets, and an epoll loop that serves whichever client is ready: what asyncio hides. This
// file is the lesson; server_epoll/loop.cpp is the epoll plumbing under it.
//
//   the lab's asyncio                    here
//   asyncio.start_server(handle_client)  get_server_socket, then the listener in the epoll set
//   handle_client(reader, writer)        a Connection in the table, at its descriptor
//   await reader.read()                  the descriptor is readable: on_readable
//   writer.write(reply)                  make_reply appends to Connection::unsent
//   await writer.drain()                 EPOLLOUT: on_writable sends what send() could not take
//   writer.close()                       State::closing: the unsent replies, then a lingering close
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
#include "common/protocol.hpp"
#include "server_epoll/loop.hpp"

namespace {
// Back-pressure: once a client's replies pile up unsent past this, the server stops answering
// it (its complete questions wait in the framer) and stops reading from it until they drain,
// so a client that never reads cannot grow the server's memory.
constexpr std::size_t MAX_UNSENT = std::size_t{64} * 1024;
// Out of descriptors, the listener is paused for this long, instead of spinning on it.
constexpr std::chrono::milliseconds ACCEPT_PAUSE{100};

// Every handler returns what its connection waits for next. The loop tells epoll, and calls
// epoll_ctl only when that changes, so a steady exchange costs one recv and one send per
// question, and no epoll_ctl.
enum class Want { read, write, read_write, close };

std::uint32_t events(Want want) {
  switch (want) {
    case Want::read:
      return EPOLLIN;
    case Want::write:
      return EPOLLOUT;
    case Want::read_write:
      return EPOLLIN | EPOLLOUT;
    case Want::close:
      break;  // the loop closes it: nothing to watch
  }
  return 0;
}

// A close the server decides on (the question limit, a question it will not answer) lingers, as
// linger_before_close does for the blocking servers, but without blocking the loop.
enum class State {
  serving,    // answering questions
  closing,    // answering no more: sending what is unsent, then its end of stream
  lingering,  // reading and discarding until the client's end of stream, LINGER_BYTES or
              // the deadline
};

// One client: what handle_client's local variables are in the lab's asyncio server.
struct Connection {
  Connection(Fd socket, std::string address, std::optional<std::uint32_t> seed)
      : sock(std::move(socket)), peer(std::move(address)), replies(seed) {}
  Fd sock;
  std::string peer;
  Framer unread{MAX_QUESTION, "question"};  // bytes of questions not yet answered
  std::string unsent;                       // replies send() has not taken yet
  ReplySequence replies;
  unsigned answered = 0;
  bool peer_closed = false;  // the client sent its end of stream
  State state = State::serving;
  Want watched = Want::read;  // what epoll watches for now
  std::size_t discarded = 0;  // lingering: bytes read and thrown away
  Clock::time_point linger_until;
};

// The connections, indexed by descriptor (the lab's "dictionary of file handles to sockets"):
// descriptors are small integers, so the table is an array, grown as they come.
using Table = std::vector<std::unique_ptr<Connection>>;

// The listener, accepting, or paused while the server is out of descriptors.
struct Listener {
  Fd sock;
  enum class State { accepting, paused } state = State::accepting;
  Clock::time_point resume_at{};
};

bool limit_reached(const Connection& c, const ServerOptions& options) {
  return options.max_questions != 0 && c.answered == options.max_questions;
}

// Stage 5's make_reply for every complete question the framer holds, until the limit or until
// the unsent replies pass MAX_UNSENT. A question it will not answer (too long, or cut short by
// the client's end of stream) is logged, and the connection closes once the replies before it
// are out.
void answer(Connection& c, const ServerOptions& options) {
  try {
    while (c.state == State::serving && !limit_reached(c, options) &&
           c.unsent.size() <= MAX_UNSENT) {
      const std::optional<std::string_view> question = c.unread.next('?');
      if (!question) {
        if (c.peer_closed && !c.unread.pending().empty()) {
          throw closed_mid_message(c.unread.pending());
        }
        return;
      }
      make_reply(*question, c.replies, c.unsent);
      ++c.answered;
    }
  } catch (const std::exception& error) {
    log_line("Client " + c.peer + " error: " + error.what());
    c.state = State::closing;
  }
}

// Every reply is out: stage 4's ending of the conversation, or more questions.
Want all_sent(Connection& c, const ServerOptions& options) {
  if (c.state == State::serving) {
    if (c.peer_closed) {
      log_line("Client " + c.peer + " closed the connection");
      return Want::close;
    }
    if (!limit_reached(c, options)) return Want::read;
    log_line("Closing connection to " + c.peer + " after " + std::to_string(c.answered) +
             " questions");
    c.state = State::closing;
  }
  if (c.state == State::closing) {  // the end of stream, then the lingering
    if (c.peer_closed || shutdown(c.sock.get(), SHUT_WR) != 0) return Want::close;
    c.state = State::lingering;
    c.linger_until = Clock::now() + LINGER_TIME;
  }
  return Want::read;
}

// Stage 5's send_all without blocking: sends what the socket takes now; the rest waits for
// EPOLLOUT.
Want on_writable(Connection& c, const ServerOptions& options) {
  answer(c, options);
  const ssize_t sent =
      c.unsent.empty() ? 0 : send(c.sock.get(), c.unsent.data(), c.unsent.size(), MSG_NOSIGNAL);
  if (sent >= 0) {
    c.unsent.erase(0, static_cast<std::size_t>(sent));
  } else if (errno != EAGAIN && errno != EINTR) {
    throw std::system_error(errno, std::generic_category(), "send");
  }
  answer(c, options);  // what waited for the replies to drain
  if (c.unsent.empty()) return all_sent(c, options);
  const bool more_to_read = c.state == State::serving && !limit_reached(c, options) &&
                            !c.peer_closed && c.unsent.size() <= MAX_UNSENT;
  return more_to_read ? Want::read_write : Want::write;
}

// Stage 6's recv without blocking: takes what has arrived, then answers what is complete.
Want on_readable(Connection& c, const ServerOptions& options, std::span<char> buffer) {
  const ssize_t received = recv(c.sock.get(), buffer.data(), buffer.size(), 0);
  if (received < 0 && (errno == EAGAIN || errno == EINTR)) return c.watched;
  if (c.state == State::lingering) {  // what it still sends is thrown away
    c.discarded += static_cast<std::size_t>(std::max<ssize_t>(received, 0));
    return received <= 0 || c.discarded >= LINGER_BYTES ? Want::close : Want::read;
  }
  if (received < 0) throw std::system_error(errno, std::generic_category(), "recv");
  if (received == 0) c.peer_closed = true;  // a half-close: it still gets what it asked for
  c.unread.append({buffer.data(), static_cast<std::size_t>(received)});
  return on_writable(c, options);
}

// Stage 3 without blocking: accepts every client waiting in the backlog into the table. False
// when out of descriptors. A client epoll cannot watch (out of kernel memory, or
// fs.epoll.max_user_watches reached) is that client's error: logged and closed.
bool accept_clients(const EventLoop& loop, int listener, Table& connections,
                    const ServerOptions& options) {
  while (true) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    Fd sock(accept4(listener, reinterpret_cast<sockaddr*>(&address), &length,
                    SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!sock) return errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM;
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

// The lingering connections' deadlines, the earliest first: each is LINGER_TIME after its start,
// so they end in the order they start. One whose connection has gone meanwhile is skipped.
using Deadlines = std::deque<std::pair<Clock::time_point, int>>;

// A client's descriptor is ready: its handler, then what it waits for next. Whatever fails for
// one client (its recv, its send, its epoll_ctl) closes that client, never the server; once its
// end line is logged (closing, lingering), a failure closes it without a second one.
void serve(const EventLoop& loop, std::unique_ptr<Connection>& slot, std::uint32_t ready,
           const ServerOptions& options, std::span<char> buffer, Deadlines& lingering) {
  Connection& c = *slot;
  const State before = c.state;
  try {
    const bool readable = (ready & EPOLLIN) || !(ready & EPOLLOUT);  // or an error: recv says
    const Want want = readable && c.watched != Want::write ? on_readable(c, options, buffer)
                                                           : on_writable(c, options);
    if (want == Want::close) {
      slot.reset();  // closing the descriptor takes it out of the epoll set too
      return;
    }
    if (want != c.watched) loop.modify(c.sock.get(), events(want));
    c.watched = want;
  } catch (const std::exception& error) {
    if (c.state == State::serving) log_line("Client " + c.peer + " error: " + error.what());
    slot.reset();
    return;
  }
  if (c.state == State::lingering && before != State::lingering) {
    lingering.emplace_back(c.linger_until, c.sock.get());
  }
}

// Stage 3's listener, paused while out of descriptors: the clients wait in the backlog, and
// the loop wakes after ACCEPT_PAUSE to try again.
void on_acceptable(const EventLoop& loop, Listener& listener, Table& connections,
                   const ServerOptions& options) {
  if (accept_clients(loop, listener.sock.get(), connections, options)) return;
  loop.modify(listener.sock.get(), 0);
  listener.state = Listener::State::paused;
  listener.resume_at = Clock::now() + ACCEPT_PAUSE;
}

// When the loop must wake with nothing ready: the earliest deadline, if any.
std::optional<Clock::time_point> next_deadline(const Listener& listener,
                                               const Deadlines& lingering) {
  std::optional<Clock::time_point> next;
  if (listener.state == Listener::State::paused) next = listener.resume_at;
  if (!lingering.empty() && (!next || lingering.front().first < *next)) {
    next = lingering.front().first;
  }
  return next;
}

// What is due: the paused listener accepts again; a connection that has lingered LINGER_TIME
// closes.
void on_deadlines(const EventLoop& loop, Listener& listener, Table& connections,
                  Deadlines& lingering) {
  const Clock::time_point now = Clock::now();
  if (listener.state == Listener::State::paused && listener.resume_at <= now) {
    loop.modify(listener.sock.get(), EPOLLIN);
    listener.state = Listener::State::accepting;
  }
  for (; !lingering.empty() && lingering.front().first <= now; lingering.pop_front()) {
    auto& slot = connections[static_cast<std::size_t>(lingering.front().second)];
    if (slot && slot->state == State::lingering && slot->linger_until == lingering.front().first) {
      slot.reset();
    }
  }
}
}  // namespace

int main(int argc, char* argv[]) try {
  const ServerOptions options =
      parse_server_options(argc, argv, "server_epoll", {.max_questions = 10});
  EventLoop loop;  // first: a SIGINT or SIGTERM from now on comes through the loop
  Listener listener{get_server_socket(options.host, options.port)};  // stages 1-2
  fcntl(listener.sock.get(), F_SETFL, O_NONBLOCK);
  loop.add(listener.sock.get(), EPOLLIN);

  Table connections;
  Deadlines lingering;
  std::array<char, std::size_t{16} * 1024> buffer{};  // every recv lands here first
  while (true) {
    for (const epoll_event& event : loop.wait(next_deadline(listener, lingering))) {
      const int fd = event.data.fd;
      if (loop.is_signal(event)) {
        connections.clear();  // closes every connection
        log_line("Shutting down");
        return 0;
      }
      if (fd == listener.sock.get()) {
        on_acceptable(loop, listener, connections, options);
      } else {
        serve(loop, connections[static_cast<std::size_t>(fd)], event.events, options, buffer,
              lingering);
      }
    }
    on_deadlines(loop, listener, connections, lingering);
  }
} catch (const std::exception& error) {
  return fail(error);
}
