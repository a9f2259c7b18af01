#include "common/server.hpp"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <memory>
#include <stdexcept>
#include <thread>

#include "common/log.hpp"

namespace {
// Only what a signal handler may touch: lock-free atomics, read by the handler, which calls
// nothing but shutdown() (async-signal-safe). One slot per serving thread holds its connection.
std::atomic<bool> stopping{false};
std::atomic<int> listener_fd{-1};
std::unique_ptr<std::atomic<int>[]> slots;
unsigned slot_count = 0;
std::atomic<unsigned> next_slot{0};
thread_local std::atomic<int>* my_slot = nullptr;

extern "C" void on_stop_signal(int /*signal*/) {
  const int saved_errno = errno;
  request_stop();
  errno = saved_errno;
}

// While it lives, SIGINT/SIGTERM shut `sock` down, so this thread's blocking recv/send returns.
class ShutdownOnStop {
 public:
  explicit ShutdownOnStop(int sock) {
    if (my_slot == nullptr) my_slot = &slots[next_slot++];
    *my_slot = sock;
    if (stopping) shutdown(sock, SHUT_RDWR);  // the signal came before the slot was filled
  }
  ~ShutdownOnStop() { *my_slot = -1; }
  ShutdownOnStop(const ShutdownOnStop&) = delete;
  ShutdownOnStop& operator=(const ShutdownOnStop&) = delete;
};
}  // namespace

void stop_on_signals(int listener, unsigned threads) {
  listener_fd = listener;
  slots = std::make_unique<std::atomic<int>[]>(threads);
  for (unsigned i = 0; i < threads; ++i) slots[i] = -1;
  slot_count = threads;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;  // no SA_RESTART: a blocked accept or recv returns EINTR
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void request_stop() {
  stopping = true;
  shutdown(listener_fd, SHUT_RDWR);
  for (unsigned i = 0; i < slot_count; ++i) {
    if (const int fd = slots[i]; fd >= 0) shutdown(fd, SHUT_RDWR);
  }
}

void setup_connections(int listener, const ServerOptions& options) {
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
  const ShutdownOnStop guard(sock.get());
  log_line("Accepted connection from " + peer);
  Framer buffer(MAX_QUESTION, "question");
  std::mt19937 gen = make_generator(options.seed);
  try {
    for (unsigned answered = 0;; ++answered) {
      if (options.max_questions != 0 && answered == options.max_questions) {
        log_line("Closing connection to " + peer + " after " + std::to_string(answered) +
                 " questions");
        return;
      }
      if (!process_request(sock.get(), buffer, gen)) {
        if (!stopping) log_line("Client " + peer + " closed the connection");
        return;
      }
    }
  } catch (const std::exception& error) {
    if (!stopping) log_line("Client " + peer + " error: " + error.what());
  }
}

bool process_request(int sock, Framer& buffer, std::mt19937& gen) {
  const std::optional<std::string> question = recv_upto(sock, buffer, '?');
  if (!question) return false;
  std::string reply;
  make_reply(*question, gen, reply);
  send_all(sock, reply);
  return true;
}
