#pragma once

// server_epoll's handlers: one client's conversation as a state and the handlers that move it
// on when its descriptor is ready. They never block and never touch the epoll set: each returns
// what its connection waits for next, and the loop in server_epoll/main.cpp tells epoll.
// tests/fuzz/server_epoll_fuzz.cpp drives them over socketpairs.
#include <sys/epoll.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/cli.hpp"
#include "common/fd.hpp"
#include "common/protocol.hpp"
#include "server_epoll/loop.hpp"  // Clock

// Back-pressure: once a client's replies pile up unsent past this, the server stops answering
// it (its complete questions wait in the framer) and stops reading from it until they drain,
// so a client that never reads cannot grow the server's memory.
inline constexpr std::size_t MAX_UNSENT = std::size_t{64} * 1024;
// Once a connection has sent everything, a buffer a burst grew past this is given back: an idle
// connection keeps at most this much per buffer, not its peak (Redis resizes idle clients'
// buffers likewise).
inline constexpr std::size_t KEEP_WHEN_IDLE = std::size_t{4} * 1024;

// Every handler returns what its connection waits for next. The loop tells epoll, and calls
// epoll_ctl only when that changes, so a steady exchange costs one recv and one send per
// question, and no epoll_ctl.
enum class Want { read, write, read_write, close };
std::uint32_t events(Want want);

// How far a conversation has got. A close the server decides on (the question limit, a question
// it will not answer) lingers, as linger_before_close does for the blocking servers, but without
// blocking the loop.
enum class Stage {
  serving,    // answering questions
  closing,    // answering no more: sending what is unsent, then its end of stream
  lingering,  // reading and discarding until the client's end of stream, LINGER_BYTES or
              // linger_until
};

// One client: what handle_client's local variables are in the lab's asyncio server.
struct Connection {
  Connection(Fd socket, std::string address, std::optional<std::uint32_t> seed)
      : sock(std::move(socket)), peer(std::move(address)), replies(seed) {}
  Fd sock;
  std::string peer;
  Framer unanswered{MAX_QUESTION, "question"};  // bytes received, not yet answered
  std::string outgoing;  // replies made; send() has taken the first `sent` bytes of them
  std::size_t sent = 0;
  ReplySequence replies;
  unsigned answered = 0;
  bool peer_closed = false;  // the client sent its end of stream
  Stage stage = Stage::serving;
  Want watched = Want::read;  // what epoll watches for now
  std::size_t discarded = 0;  // lingering: bytes read and thrown away
  Clock::time_point linger_until;

  [[nodiscard]] std::size_t unsent() const { return outgoing.size() - sent; }
};

// The connection's descriptor is ready (`ready`: epoll's events for it): the handler that fits,
// and what the connection waits for next. Whatever fails for this client (its recv, its send)
// ends it, logged, with Want::close; once its end line is logged (closing, lingering), without
// a second one. `buffer` is where every recv lands first.
Want on_ready(Connection& c, std::uint32_t ready, const ServerOptions& options,
              std::span<char> buffer);

// The error line of a connection that fails, unless its end line is already logged.
void log_failure(const Connection& c, const std::exception& error);
