#include "common/net.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <memory>
#include <stdexcept>
#include <system_error>

#include "common/log.hpp"

namespace {
std::system_error errno_error(const std::string& what) {
  return {errno, std::generic_category(), what};
}

using AddrInfoList = std::unique_ptr<addrinfo, decltype(&freeaddrinfo)>;

AddrInfoList resolve(const std::string& host, const std::string& port, int flags,
                     const std::string& what) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags;
  addrinfo* list = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0) {
    throw std::runtime_error(what + ": " + gai_strerror(rc));
  }
  return {list, freeaddrinfo};
}
}  // namespace

std::string format_address(std::string_view host, std::string_view port) {
  const bool ipv6 = host.find(':') != std::string_view::npos;
  return (ipv6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::string(port);
}

std::string format_address(const sockaddr* address) {
  std::array<char, NI_MAXHOST> host{};
  std::array<char, NI_MAXSERV> port{};
  const socklen_t length =
      address->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (getnameinfo(address, length, host.data(), host.size(), port.data(), port.size(),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return format_address(host.data(), port.data());
}

std::string local_address(int sock) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (getsockname(sock, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw errno_error("getsockname");
  }
  return format_address(reinterpret_cast<sockaddr*>(&address));
}

namespace {
// socket, bind and listen, with SO_REUSEADDR (a restarted server may bind while old connections
// sit in TIME_WAIT) and, if `shared`, SO_REUSEPORT. An invalid Fd, errno set, on failure.
Fd listen_at(const sockaddr* address, socklen_t length, bool shared) {
  Fd listener(socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int on = 1;
  if (listener && setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == 0 &&
      (!shared || setsockopt(listener.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) == 0) &&
      bind(listener.get(), address, length) == 0 && listen(listener.get(), SOMAXCONN) == 0) {
    return listener;
  }
  return Fd();
}
}  // namespace

Fd get_server_socket(const std::string& host, const std::string& port) {
  return std::move(get_server_sockets(host, port, 1).front());
}

std::vector<Fd> get_server_sockets(const std::string& host, const std::string& port,
                                   unsigned count) {
  std::signal(SIGPIPE, SIG_IGN);  // logging to a closed pipe must not kill the server either
  raise_fd_limit();
  const std::string what = "cannot listen on " + format_address(host, port);
  const AddrInfoList list = resolve(host, port, AI_PASSIVE, what);
  const bool shared = count > 1;
  int error = 0;
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    std::vector<Fd> listeners;
    listeners.push_back(listen_at(ai->ai_addr, ai->ai_addrlen, shared));
    if (!listeners.front()) {
      error = errno;
      continue;
    }
    // The others at the address the first got (its port, where port 0 let the kernel choose).
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    getsockname(listeners.front().get(), reinterpret_cast<sockaddr*>(&address), &length);
    while (listeners.size() < count) {
      listeners.push_back(listen_at(reinterpret_cast<sockaddr*>(&address), length, shared));
      if (!listeners.back()) throw errno_error(what);
    }
    log_line("Listening for incoming connections at " + local_address(listeners.front().get()));
    return listeners;
  }
  throw std::system_error(error, std::generic_category(), what);
}

Fd connect_to(const std::string& host, const std::string& port) {
  const std::string what = "cannot connect to " + format_address(host, port);
  const AddrInfoList list = resolve(host, port, 0, what);
  int error = 0;
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    Fd sock(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (sock && connect(sock.get(), ai->ai_addr, ai->ai_addrlen) == 0) return sock;
    error = errno;
  }
  throw std::system_error(error, std::generic_category(), what);
}

void send_all(int sock, std::string_view data) {
  while (!data.empty()) {
    const ssize_t sent = send(sock, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent >= 0) {
      data.remove_prefix(static_cast<std::size_t>(sent));
    } else if (errno != EINTR) {
      throw errno_error("send");
    }
  }
}

void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

void linger_before_close(int sock) {
  if (shutdown(sock, SHUT_WR) != 0) return;  // the client has reset it: nothing to wait for
  const auto deadline = std::chrono::steady_clock::now() + LINGER_TIME;
  std::array<char, std::size_t{16} * 1024> discard{};
  for (std::size_t discarded = 0; discarded < LINGER_BYTES;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    pollfd ready{sock, POLLIN, 0};
    const int count = poll(&ready, 1, static_cast<int>(left.count()));
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) return;
    const ssize_t received = recv(sock, discard.data(), discard.size(), MSG_DONTWAIT);
    if (received == 0 || (received < 0 && errno != EAGAIN && errno != EINTR)) return;
    if (received > 0) discarded += static_cast<std::size_t>(received);
  }
}
