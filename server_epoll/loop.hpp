#pragma once

// The plumbing under server_epoll's loop, as Redis keeps ae_epoll.c beside ae.c: the epoll set,
// SIGINT and SIGTERM as a descriptor in it, and a wait that ends at a deadline. The lesson, the
// connection table and the loop, is server_epoll/main.cpp; the handlers are in
// server_epoll/connection.cpp.
#include <sys/epoll.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>

#include "common/fd.hpp"

using Clock = std::chrono::steady_clock;

class EventLoop {
 public:
  // From here on SIGINT and SIGTERM wait in a signalfd in the set, so a signal sent the moment
  // the server listens is read by the loop like any ready descriptor.
  EventLoop();

  // Puts `fd` in the epoll set, or changes what it is watched for: EPOLLIN, EPOLLOUT, both, or
  // 0. Epoll reports EPOLLERR and EPOLLHUP whatever the mask, so 0 means "only if it fails or
  // hangs up", not "nothing". Throws std::system_error("epoll_ctl").
  void add(int fd, std::uint32_t events);
  void modify(int fd, std::uint32_t events);

  // The descriptors ready now; waits for one until `deadline` (none: for as long as it takes).
  std::span<const epoll_event> wait(std::optional<Clock::time_point> deadline);
  [[nodiscard]] bool is_signal(const epoll_event& event) const {
    return event.data.fd == signals_.get();
  }

 private:
  Fd epoll_;
  Fd signals_;
  std::array<epoll_event, 256> ready_{};
};
