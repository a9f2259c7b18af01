// broken_server: a sphinx server broken on purpose in one way, for grade's tests. grade must fail
// the one check that guards that behaviour and pass all the others.
//
//   broken_server BREAK [HOST [PORT]] [--seed N] [--max-questions N]
//
//   first-only       answers only the first question of a packet (the lab's Python recv_upto)
//   no-limit         ignores --max-questions
//   dies-on-error    exits when a client closes mid-question (the lab's -e)
//   ignores-sigterm  does not exit on SIGTERM
//   closes-at-once   closes every connection as soon as it accepts it, answering no one
//
// Otherwise it is server_simple, written out: one client at a time, SIGTERM ends it with exit 0.
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

namespace {
std::atomic<int> listener_fd{-1};
volatile std::sig_atomic_t stopping = 0;

extern "C" void on_sigterm(int /*signal*/) {
  stopping = 1;
  shutdown(listener_fd, SHUT_RDWR);  // accept returns at once, whenever the signal comes
}

// The lab's Python recv_upto: receive until a '?' is in, return up to it, drop what came after.
std::optional<std::string> recv_first_only(int sock) {
  std::string data;
  while (data.find('?') == std::string::npos) {
    char chunk[4096];
    const ssize_t received = recv(sock, chunk, sizeof chunk, 0);
    if (received <= 0) {
      if (data.empty()) return std::nullopt;
      throw closed_mid_message(data);
    }
    data.append(chunk, static_cast<std::size_t>(received));
  }
  return data.substr(0, data.find('?') + 1);
}

void serve(int sock, const std::string& broken, const ServerOptions& options) {
  Framer buffer(MAX_QUESTION, "question");
  std::mt19937 gen = make_generator(options.seed);
  const bool limited = options.max_questions != 0 && broken != "no-limit";
  for (unsigned answered = 0; !limited || answered < options.max_questions; ++answered) {
    std::optional<std::string> question;
    try {
      question = broken == "first-only" ? recv_first_only(sock) : recv_upto(sock, buffer, '?');
    } catch (const std::system_error&) {
      return;  // a reset: that client's end, even here
    } catch (const std::exception&) {
      if (broken == "dies-on-error") throw;  // closed mid-question, as client_questions -e does
      return;
    }
    if (!question) return;
    std::string reply;
    make_reply(*question, gen, reply);
    try {
      send_all(sock, reply);
    } catch (const std::exception&) {
      return;
    }
  }
  shutdown(sock, SHUT_WR);  // the limit: an end of stream, then what the client still sends
  char chunk[4096];
  while (recv(sock, chunk, sizeof chunk, 0) > 0) {
  }
}
}  // namespace

int main(int argc, char* argv[]) try {
  const std::vector<std::string> breaks = {"first-only", "no-limit", "dies-on-error",
                                           "ignores-sigterm", "closes-at-once"};
  if (argc < 2 || std::find(breaks.begin(), breaks.end(), argv[1]) == breaks.end()) {
    std::fputs(
        "usage: broken_server first-only|no-limit|dies-on-error|ignores-sigterm|closes-at-once "
        "...\n",
        stderr);
    return 2;
  }
  const std::string broken = argv[1];
  const ServerOptions options = parse_server_options(argc - 1, argv + 1, "broken_server", {});
  const Fd listener = get_server_socket(options.host, options.port);
  listener_fd = listener.get();
  std::signal(SIGTERM, broken == "ignores-sigterm" ? SIG_IGN : on_sigterm);

  while (stopping == 0) {
    const Fd sock(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (sock && broken != "closes-at-once") serve(sock.get(), broken, options);
  }
  log_line("Shutting down");
  return 0;
} catch (const std::exception& error) {
  return fail(error);
}
