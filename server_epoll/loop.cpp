#include "server_epoll/loop.hpp"

#include <sys/signalfd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <system_error>

namespace {
std::system_error errno_error(const char* what) { return {errno, std::generic_category(), what}; }
}  // namespace

EventLoop::EventLoop() : epoll_(epoll_create1(EPOLL_CLOEXEC)) {
  if (!epoll_) throw errno_error("epoll_create1");
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked, they stay pending for the signalfd.
  if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) throw errno_error("sigprocmask");
  signals_.reset(signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals_) throw errno_error("signalfd");
  add(signals_.get(), EPOLLIN);
}

void EventLoop::add(int fd, std::uint32_t events) {
  epoll_event event{.events = events, .data = {.fd = fd}};
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) throw errno_error("epoll_ctl");
}

void EventLoop::modify(int fd, std::uint32_t events) {
  epoll_event event{.events = events, .data = {.fd = fd}};
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event) != 0) throw errno_error("epoll_ctl");
}

std::span<const epoll_event> EventLoop::wait(std::optional<Clock::time_point> deadline) {
  int timeout = -1;
  if (deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
    timeout = static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
  }
  const int count =
      epoll_wait(epoll_.get(), ready_.data(), static_cast<int>(ready_.size()), timeout);
  if (count < 0 && errno != EINTR) throw errno_error("epoll_wait");
  return {ready_.data(), static_cast<std::size_t>(std::max(count, 0))};
}
