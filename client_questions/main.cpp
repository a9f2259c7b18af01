// client_questions: the lab's client. Asks the three example questions and prints each reply.
// -e sends the first question without its '?' and closes (the lab's way to cause a server-side
// error); --cycle is the lab's task: ask over and over, waiting --delay seconds before each.
// What the server sends is printed escaped, as the servers log what clients send: a server
// cannot put control bytes on the student's terminal.
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

namespace {
// Sends one question and prints its reply. False if the server closed before replying.
bool ask(int sock, Framer& buffer, std::string_view question) {
  send_all(sock, question);
  // The reply starts with the question, which may hold a '.': only a '.' after it ends the reply.
  const std::optional<std::string> reply = recv_upto(sock, buffer, '.', question.size());
  if (!reply) return false;
  log_line(escape(*reply));
  return true;
}

std::runtime_error unasked(std::string_view bytes) {
  return std::runtime_error("the server sent '" + escape(bytes) + "' unasked");
}

// The lab's "sleep before each question", but it wakes at once if the server closes meanwhile.
// True if it did (an end of stream, or a reset); bytes nobody asked for are an error.
bool server_closed_within(int sock, const Framer& buffer, double seconds) {
  if (!buffer.pending().empty()) throw unasked(buffer.pending());  // came with the last reply
  pollfd ready{.fd = sock, .events = POLLIN, .revents = 0};
  if (poll(&ready, 1, static_cast<int>(seconds * 1000)) <= 0) return false;
  char chunk[256];
  const ssize_t received = recv(sock, chunk, sizeof chunk, 0);
  if (received > 0) throw unasked({chunk, static_cast<std::size_t>(received)});
  if (received < 0 && errno != ECONNRESET) {
    throw std::system_error(errno, std::generic_category(), "recv");
  }
  return true;
}

// --cycle: ask forever; the server ends it by closing the connection (its --max-questions).
void cycle_questions(int sock, Framer& buffer, double delay) {
  try {
    for (std::size_t i = 0;; ++i) {
      if (server_closed_within(sock, buffer, delay)) break;
      if (!ask(sock, buffer, questions[i % questions.size()])) break;
    }
  } catch (const std::system_error& error) {
    // A question sent just as the server closed is answered by a reset: a close, too.
    if (error.code() != std::errc::connection_reset && error.code() != std::errc::broken_pipe) {
      throw;
    }
  }
  log_error("the server closed the connection");
}
constexpr std::string_view usage =
    "usage: client_questions HOST PORT [-e] [--cycle] [--delay SECONDS]\n"
    "  HOST                  the server's address\n"
    "  PORT                  the server's port\n"
    "  -e                    send the first question without its '?', then close\n"
    "  --cycle               the lab's task: ask again and again until the server closes\n"
    "  --delay SECONDS       with --cycle, seconds to wait before each question (default 2)\n"
    "  -h, --help            print this help and exit\n";

struct Options {
  std::string host;
  std::string port;
  bool cause_error = false;
  bool cycle = false;
  std::optional<double> delay;  // only with --cycle (default 2)
};

std::optional<Options> read_options(int argc, char* argv[]) {
  Options options;
  const std::array<option, 2> long_options = {
      {{"cycle", no_argument, nullptr, 'c'}, {"delay", required_argument, nullptr, 'd'}}};
  const auto arguments =
      parse_command_line(argc, argv, "e", long_options, [&](int val, const char* value) {
        if (val == 'e') options.cause_error = true;
        if (val == 'c') options.cycle = true;
        if (val == 'd') options.delay = parse_seconds(value, "--delay");
      });
  if (!arguments) return std::nullopt;
  check_arguments(*arguments, {"HOST", "PORT"}, 2);
  options.host = (*arguments)[0];
  options.port = (*arguments)[1];
  parse_uint(options.port, "PORT", 0, 65535);
  if (options.cause_error && options.cycle) throw UsageError("-e and --cycle exclude each other");
  if (options.delay && !options.cycle) throw UsageError("--delay goes with --cycle");
  return options;
}
}  // namespace

int main(int argc, char* argv[]) try {
  const auto [host, port, cause_error, cycle, delay] =
      options_or_exit("client_questions", usage, [&] { return read_options(argc, argv); });

  const Fd sock = connect_to(host, port);
  Framer buffer(MAX_REPLY, "reply");
  if (cause_error) {
    send_all(sock.get(), questions[0].substr(0, questions[0].size() - 1));
  } else if (cycle) {
    cycle_questions(sock.get(), buffer, delay.value_or(2));
  } else {
    for (const std::string_view question : questions) {
      if (!ask(sock.get(), buffer, question)) {
        throw std::runtime_error("the server closed the connection before replying");
      }
    }
  }
  return 0;
} catch (const std::exception& error) {
  return fail(error);
}
