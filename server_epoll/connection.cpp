#include "server_epoll/connection.hpp"

#include <malloc.h>
#include <sys/socket.h>

#include <cerrno>
#include <system_error>

#include "common/log.hpp"
#include "common/net.hpp"

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

namespace {
bool limit_reached(const Connection& c, const ServerOptions& options) {
  return options.max_questions != 0 && c.answered == options.max_questions;
}

// Stage 5's make_reply for every complete question the framer holds, until the limit or until
// the unsent replies pass MAX_UNSENT. A question it will not answer (too long, or cut short by
// the client's end of stream) is logged, and the connection closes once the replies before it
// are out.
void answer(Connection& c, const ServerOptions& options) {
  try {
    while (c.stage == Stage::serving && !limit_reached(c, options) && c.unsent() <= MAX_UNSENT) {
      const std::optional<std::string_view> question = c.unanswered.next('?');
      if (!question) {
        if (c.peer_closed && !c.unanswered.pending().empty()) {
          throw closed_mid_message(c.unanswered.pending());
        }
        return;
      }
      if (c.sent > 0) {  // what send() took goes before more is appended
        c.outgoing.erase(0, c.sent);
        c.sent = 0;
      }
      make_reply(*question, c.replies, c.outgoing);
      ++c.answered;
    }
  } catch (const std::exception& error) {
    log_line("Client " + c.peer + " error: " + error.what());
    c.stage = Stage::closing;
  }
}

// glibc keeps what is freed in its heap for the next allocation; malloc_trim hands the free pages
// back to the kernel. It walks the whole heap, every connection's, so it runs once this much has
// been given back, not on every drain: a client whose buffers grow and drain on each round trip
// (a few long questions at a time) would otherwise make the loop walk the heap for each one.
constexpr std::size_t TRIM_AFTER = std::size_t{128} * 1024;
std::size_t untrimmed = 0;  // bytes given back to the heap since the last malloc_trim

std::size_t held(const Connection& c) { return c.outgoing.capacity() + c.unanswered.capacity(); }

// Every reply is out: the buffers go back to what an idle connection needs, whatever a burst
// grew them to (a string keeps its peak capacity through clear and erase).
void release_burst(Connection& c) {
  c.sent = 0;
  const std::size_t before = held(c);
  if (c.outgoing.capacity() > KEEP_WHEN_IDLE) {
    std::string().swap(c.outgoing);
  } else {
    c.outgoing.clear();
  }
  c.unanswered.shrink(KEEP_WHEN_IDLE);
  untrimmed += before - held(c);
  if (untrimmed >= TRIM_AFTER) {
    malloc_trim(0);
    untrimmed = 0;
  }
}

// Every reply is out: stage 4's ending of the conversation, or more questions.
Want on_all_sent(Connection& c, const ServerOptions& options) {
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
  if (c.stage == Stage::closing) {  // the end of stream, then the lingering
    if (c.peer_closed || shutdown(c.sock.get(), SHUT_WR) != 0) return Want::close;
    c.stage = Stage::lingering;
    c.linger_until = Clock::now() + LINGER_TIME;
  }
  return Want::read;
}

// Stage 5's send_all without blocking: sends what the socket takes now; the rest waits for
// EPOLLOUT. An offset keeps what is sent (Redis's sentlen), so a partial send moves no bytes.
Want on_writable(Connection& c, const ServerOptions& options) {
  answer(c, options);
  if (c.unsent() > 0) {
    const ssize_t sent = send(c.sock.get(), c.outgoing.data() + c.sent, c.unsent(), MSG_NOSIGNAL);
    if (sent >= 0) {
      c.sent += static_cast<std::size_t>(sent);
    } else if (errno != EAGAIN && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "send");
    }
  }
  answer(c, options);  // what waited for the replies to drain
  if (c.unsent() == 0) {
    release_burst(c);
    return on_all_sent(c, options);
  }
  const bool more_to_read = c.stage == Stage::serving && !limit_reached(c, options) &&
                            !c.peer_closed && c.unsent() <= MAX_UNSENT;
  return more_to_read ? Want::read_write : Want::write;
}

// Stage 6's recv without blocking: takes what has arrived, then answers what is complete.
Want on_readable(Connection& c, const ServerOptions& options, std::span<char> buffer) {
  const ssize_t received = recv(c.sock.get(), buffer.data(), buffer.size(), 0);
  if (received < 0 && (errno == EAGAIN || errno == EINTR)) return c.watched;
  if (c.stage == Stage::lingering) {  // what it still sends is thrown away
    c.discarded += static_cast<std::size_t>(std::max<ssize_t>(received, 0));
    return received <= 0 || c.discarded >= LINGER_BYTES ? Want::close : Want::read;
  }
  if (received < 0) throw std::system_error(errno, std::generic_category(), "recv");
  if (received == 0) c.peer_closed = true;  // a half-close: it still gets what it asked for
  c.unanswered.append({buffer.data(), static_cast<std::size_t>(received)});
  return on_writable(c, options);
}
}  // namespace

Want on_ready(Connection& c, std::uint32_t ready, const ServerOptions& options,
              std::span<char> buffer) {
  try {
    // Epoll reports EPOLLERR and EPOLLHUP whatever it watches: the call the connection waits
    // on says what happened.
    if (c.watched == Want::write) return on_writable(c, options);  // it waits only to send
    if (ready & EPOLLIN) return on_readable(c, options, buffer);   // bytes, the end, an error
    if (ready & EPOLLOUT) return on_writable(c, options);          // room for unsent replies
    return on_readable(c, options, buffer);  // EPOLLERR or EPOLLHUP alone: recv says which
  } catch (const std::exception& error) {
    log_failure(c, error);
    return Want::close;
  }
}

void log_failure(const Connection& c, const std::exception& error) {
  if (c.stage == Stage::serving) log_line("Client " + c.peer + " error: " + error.what());
}
