// A test seam, loaded into server_epoll with LD_PRELOAD by tests/edges_test.cpp.
//
// epoll_ctl fails for some client connections, as it does once fs.epoll.max_user_watches is used
// up (ENOSPC) or the kernel is out of memory (ENOMEM). SPHINX_FAIL_EPOLL_CTL chooses which calls
// fail:
//   add  the EPOLL_CTL_ADD of every second client, with ENOSPC
//   mod  every EPOLL_CTL_MOD of a client, with ENOMEM
// A client is a connected socket; the listener and the signalfd are never failed.
//
// With SPHINX_EPOLL_WAIT_TWICE set, epoll_wait reports every ready descriptor twice in its batch:
// once a handler has closed a connection, its second event comes for an empty slot, as it would
// after a handler that closes other connections (an idle timeout run inside the batch).
#include <dlfcn.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <string_view>

namespace {
bool is_client(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof peer;
  return getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0;
}
}  // namespace

extern "C" int epoll_ctl(int epoll, int op, int fd, epoll_event* event) {
  using EpollCtl = int (*)(int, int, int, epoll_event*);
  static const auto real = reinterpret_cast<EpollCtl>(dlsym(RTLD_NEXT, "epoll_ctl"));
  static std::atomic<unsigned> client_adds{0};
  const char* mode = std::getenv("SPHINX_FAIL_EPOLL_CTL");
  if (mode != nullptr && is_client(fd)) {
    if (op == EPOLL_CTL_ADD && std::string_view(mode) == "add" && ++client_adds % 2 == 0) {
      errno = ENOSPC;
      return -1;
    }
    if (op == EPOLL_CTL_MOD && std::string_view(mode) == "mod") {
      errno = ENOMEM;
      return -1;
    }
  }
  return real(epoll, op, fd, event);
}

extern "C" int epoll_wait(int epoll, epoll_event* events, int max_events, int timeout) {
  using EpollWait = int (*)(int, epoll_event*, int, int);
  static const auto real = reinterpret_cast<EpollWait>(dlsym(RTLD_NEXT, "epoll_wait"));
  if (std::getenv("SPHINX_EPOLL_WAIT_TWICE") == nullptr || max_events < 2) {
    return real(epoll, events, max_events, timeout);
  }
  const int count = real(epoll, events, max_events / 2, timeout);
  for (std::ptrdiff_t i = count - 1; i >= 0; --i) {  // from the end: each to 2i and 2i + 1
    events[2 * i + 1] = events[i];
    events[2 * i] = events[i];
  }
  return count < 0 ? count : 2 * count;
}
