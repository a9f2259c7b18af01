#include "common/server.hpp"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <thread>

#include "common/log.hpp"

// Only what a signal handler may touch: lock-free atomics, and no call but shutdown() (which is
// async-signal-safe); no lock, no allocation. A thread about to block on a socket puts it in a
// slot of a list that only grows (to at most the number of sockets blocked on at once) and is
// never freed, so the handler can walk it at any moment; a slot is reused once released.
struct StopSlot {
  std::atomic<int> fd{-1};
  std::atomic<bool> taken{true};
  StopSlot* next = nullptr;  // set before the slot is published, never changed after
};

namespace {
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<StopSlot*>::is_always_lock_free);
std::atomic<StopSlot*> slots{nullptr};
std::atomic<bool> stopping{false};

extern "C" void on_stop_signal(int /*signal*/) {
  const int saved_errno = errno;
  request_stop();
  errno = saved_errno;
}

StopSlot& take_slot() {
  for (StopSlot* slot = slots.load(); slot != nullptr; slot = slot->next) {
    bool taken = false;
    if (slot->taken.compare_exchange_strong(taken, true)) return *slot;
  }
  auto* slot = new StopSlot;  // never freed: the handler may walk the list at any moment
  slot->next = slots.load();
  while (!slots.compare_exchange_weak(slot->next, slot)) {
  }
  return *slot;
}
}  // namespace

ShutdownOnStop::ShutdownOnStop(int sock) : slot_(take_slot()) {
  slot_.fd = sock;
  // The stop came before the slot was filled. (Both sides use sequentially consistent atomics:
  // either the handler sees the descriptor or this sees `stopping`.)
  if (stopping) shutdown(sock, SHUT_RDWR);
}

ShutdownOnStop::~ShutdownOnStop() {
  slot_.fd = -1;
  slot_.taken = false;
}

void stop_on_signals() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;  // no SA_RESTART: a blocked accept or recv returns EINTR
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void request_stop() {
  stopping = true;
  for (StopSlot* slot = slots.load(); slot != nullptr; slot = slot->next) {
    if (const int fd = slot->fd; fd >= 0) shutdown(fd, SHUT_RDWR);
  }
}

bool stop_requested() { return stopping; }

void setup_connections(int listener, const ServerOptions& options) {
  const ShutdownOnStop guard(listener);  // a stop makes accept return
  while (!stopping) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    Fd sock(accept4(listener, reinterpret_cast<sockaddr*>(&address), &length, SOCK_CLOEXEC));
    if (sock) {
      process_connection(std::move(sock), format_address(reinterpret_cast<sockaddr*>(&address)),
                         options);
    } else if (errno != EINTR && errno != ECONNABORTED && !stopping) {
      // Out of descriptors (EMFILE) or another resource: the listener stays ready, so retrying
      // at once would spin. Wait a moment; the clients being served free descriptors as they go.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

void process_connection(Fd sock, const std::string& peer, const ServerOptions& options) {
  const ShutdownOnStop guard(sock.get());  // also while it lingers
  log_line("Accepted connection from " + peer);
  Framer buffer(MAX_QUESTION, "question");
  ReplySequence sequence(options.seed);
  try {
    for (unsigned answered = 0;; ++answered) {
      if (options.max_questions != 0 && answered == options.max_questions) {
        log_line("Closing connection to " + peer + " after " + std::to_string(answered) +
                 " questions");
        break;
      }
      if (!process_request(sock.get(), buffer, sequence)) {
        if (!stopping) log_line("Client " + peer + " closed the connection");
        return;
      }
    }
  } catch (const std::exception& error) {
    if (stopping) return;
    log_line("Client " + peer + " error: " + error.what());
  }
  // The server ends the conversation, maybe with the client's next bytes unread.
  if (!stopping) linger_before_close(sock.get());
}

bool process_request(int sock, Framer& buffer, ReplySequence& sequence) {
  const std::optional<std::string> question = recv_upto(sock, buffer, '?');
  if (!question) return false;
  std::string reply;
  make_reply(*question, sequence, reply);
  send_all(sock, reply);
  return true;
}
