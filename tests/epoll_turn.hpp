#pragma once

// One turn of server_epoll's loop for one connection, with poll in place of epoll_wait: if its
// descriptor is ready for what the connection waits for, on_ready with what epoll would report,
// and the answer kept as serve keeps it. For tests/epoll_test.cpp and the fuzzer, which drive
// the handlers over socketpairs.
#include <poll.h>

#include <span>

#include "server_epoll/connection.hpp"

// What the connection waits for next after its turn (unchanged if it was not ready).
inline Want take_turn(Connection& c, const ServerOptions& options, std::span<char> buffer) {
  const std::uint32_t watched = events(c.watched);
  pollfd ready{.fd = c.sock.get(),
               .events = static_cast<short>(((watched & EPOLLIN) ? POLLIN : 0) |
                                            ((watched & EPOLLOUT) ? POLLOUT : 0)),
               .revents = 0};
  if (poll(&ready, 1, 0) <= 0) return c.watched;
  const std::uint32_t reported =
      ((ready.revents & POLLIN) ? EPOLLIN : 0U) | ((ready.revents & POLLOUT) ? EPOLLOUT : 0U) |
      ((ready.revents & POLLERR) ? EPOLLERR : 0U) | ((ready.revents & POLLHUP) ? EPOLLHUP : 0U);
  c.watched = on_ready(c, reported, options, buffer);
  return c.watched;
}
