// grade server: grade plays the clients. Each check opens its own connections and closes them
// before the next check starts, so a server that serves one client at a time is graded like any
// other, and each check fails alone.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <csignal>
#include <functional>
#include <system_error>
#include <thread>

#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"
#include "grade/grade.hpp"

using namespace std::chrono_literals;

namespace {
// How long a reply may take: a server answers at once, so this is only the bound on a wait.
constexpr auto reply_timeout = 2s;

struct Target {
  std::string host;
  std::string port;
};

// A client of the server under test, whose reads give up after `timeout`.
Fd open_client(const Target& target, std::chrono::milliseconds timeout = reply_timeout) {
  Fd sock;
  try {
    sock = connect_to(target.host, target.port);
  } catch (const std::system_error& error) {
    throw Came("could not connect: " + error.code().message());  // no address: the port varies
  }
  set_receive_timeout(sock.get(), timeout);
  return sock;
}

void send_bytes(int sock, std::string_view bytes) {
  try {
    send_all(sock, bytes);
  } catch (const std::system_error& error) {
    // Whether a server's close shows as EPIPE or ECONNRESET depends on whether its FIN came
    // before the reset: timing, which the report must not show.
    if (error.code() == std::errc::broken_pipe || error.code() == std::errc::connection_reset) {
      throw Came("the connection closed before the whole question was sent");
    }
    throw Came("send: " + error.code().message());
  }
}

// The reply to `question`, read as the lab's client reads it: up to the first '.' after the
// question. nullopt at the end of the stream; a reset counts as one too (a server that closes
// with questions unread makes its kernel send a reset).
std::optional<std::string> receive_reply(int sock, Framer& buffer, std::string_view question) {
  try {
    return recv_upto(sock, buffer, '.', question.size());
  } catch (const std::system_error& error) {
    if (error.code() == std::errc::connection_reset) return std::nullopt;
    if (error.code() == std::errc::resource_unavailable_try_again) {
      const std::string within = "within " + std::to_string(reply_timeout.count()) + " s";
      if (buffer.pending().empty()) throw Came("no reply " + within);
      throw Came("no whole reply " + within + ", only " + quote(buffer.pending()));
    }
    throw Came("recv: " + error.code().message());
  } catch (const std::length_error& error) {
    throw Came(error.what());
  } catch (const std::runtime_error&) {
    throw Came("the connection closed in the middle of a reply: " + quote(buffer.pending()));
  }
}

bool is_reply(std::string_view reply, std::string_view question) {
  return reply.size() > question.size() + 1 && reply.starts_with(question) &&
         reply[question.size()] == ' ' &&
         std::ranges::find(replies, reply.substr(question.size() + 1)) != replies.end();
}

// Sends `question` and returns its reply, which must be the question, a space, a stock reply.
std::string ask(int sock, Framer& buffer, std::string_view question) {
  send_bytes(sock, question);
  const std::optional<std::string> reply = receive_reply(sock, buffer, question);
  if (!reply) throw Came("to " + quote(question) + " no reply came: the connection closed");
  if (!is_reply(*reply, question)) throw Came("to " + quote(question) + " came " + quote(*reply));
  return *reply;
}

void answers_the_three_questions(const Target& target) {
  const Fd sock = open_client(target);
  Framer buffer(MAX_REPLY, "reply");
  for (const std::string_view question : questions) ask(sock.get(), buffer, question);
}

void question_in_pieces(const Target& target) {
  const Fd sock = open_client(target);
  // TCP_NODELAY and a pause: each piece leaves at once, alone, and the server reads it alone.
  const int on = 1;
  setsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  const std::string_view question = questions[0];
  for (std::size_t at = 0; at < question.size(); at += 5) {
    send_bytes(sock.get(), question.substr(at, 5));
    std::this_thread::sleep_for(20ms);
  }
  Framer buffer(MAX_REPLY, "reply");
  const std::optional<std::string> reply = receive_reply(sock.get(), buffer, question);
  if (!reply) throw Came("the connection closed without a reply");
  if (!is_reply(*reply, question)) throw Came("the reply was " + quote(*reply));
  // Exactly one reply: the next question's reply must be the next thing on the connection.
  ask(sock.get(), buffer, questions[1]);
}

void questions_in_one_packet(const Target& target) {
  const Fd sock = open_client(target);
  std::string packet;
  for (const std::string_view question : questions) packet += question;
  send_bytes(sock.get(), packet);
  Framer buffer(MAX_REPLY, "reply");
  for (std::size_t i = 0; i < questions.size(); ++i) {
    std::optional<std::string> reply;
    try {
      reply = receive_reply(sock.get(), buffer, questions[i]);
    } catch (const Came&) {
      if (i == 0) throw;
      reply = std::nullopt;
    }
    if (!reply && i > 0) {
      throw Came(std::string(i == 1 ? "only the first of 3 questions in one packet was answered"
                                    : "only the first 2 of 3 questions in one packet were "
                                      "answered"));
    }
    if (!reply) throw Came("the connection closed without a reply");
    if (i == 0 && reply->starts_with(packet)) {
      throw Came("the 3 questions in one packet were answered as one question: " + quote(*reply));
    }
    if (!is_reply(*reply, questions[i])) {
      throw Came("reply " + std::to_string(i + 1) + " was " + quote(*reply));
    }
  }
}

// Then a new client must be answered: the server went on after what the last one did.
void next_client_is_answered(const Target& target) {
  try {
    const Fd sock = open_client(target);
    Framer buffer(MAX_REPLY, "reply");
    ask(sock.get(), buffer, questions[0]);
  } catch (const Came& came) {
    throw Came(std::string("the next client: ") + came.what());
  }
}

void survives_client_error(const Target& target) {
  {
    const Fd bad = open_client(target);
    const std::string_view question = questions[0];
    send_bytes(bad.get(), question.substr(0, question.size() - 1));
  }  // closed here, as client_questions -e does
  next_client_is_answered(target);
}

void survives_reset(const Target& target) {
  {
    const Fd bad = open_client(target);
    send_bytes(bad.get(), questions[0].substr(0, 9));
    const linger reset{.l_onoff = 1, .l_linger = 0};  // close() now sends a reset, not a FIN
    setsockopt(bad.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  next_client_is_answered(target);
}

void question_limit(const Target& target, unsigned limit) {
  const Fd sock = open_client(target);
  Framer buffer(MAX_REPLY, "reply");
  const unsigned asked = limit + 3;
  unsigned replied = 0;
  for (unsigned i = 0; i < asked; ++i) {
    const std::string_view question = questions[i % questions.size()];
    try {
      send_all(sock.get(), question);
    } catch (const std::system_error&) {
      break;  // the server has closed: it refuses what we send
    }
    std::optional<std::string> reply;
    try {
      reply = receive_reply(sock.get(), buffer, question);
    } catch (const Came& came) {
      throw Came(std::to_string(replied) + " replies, then " + came.what());
    }
    if (!reply) {
      if (replied == limit) return;
      throw Came(std::to_string(replied) + " replies, then the end of the stream");
    }
    if (!is_reply(*reply, question)) {
      throw Came("reply " + std::to_string(replied + 1) + " was " + quote(*reply));
    }
    ++replied;
  }
  throw Came(std::to_string(replied) + " replies to " + std::to_string(asked) + " questions");
}

// Whether a new client is answered within a second, while the silent clients hold the server.
bool new_client_answered(const Target& target) {
  try {
    const Fd probe = open_client(target, 1s);
    Framer buffer(MAX_REPLY, "reply");
    ask(probe.get(), buffer, questions[0]);
    return true;
  } catch (const Came&) {
    return false;
  }
}

std::string served_at_once(unsigned served, unsigned probe) {
  if (served == 0) return "all " + std::to_string(probe) + " clients served at once";
  return std::to_string(served) + (served == 1 ? " client" : " clients") + " served at once";
}

// The lab's lesson as a check. Silent clients, opened one at a time, each hold whatever serves
// them: a thread blocked in its recv, or nothing at all in an event loop. After each, a new client
// asks a question. The first that is not answered tells how many the server serves at once: the
// silent clients hold all of it. A simple server fails the first probe, a pool of N the Nth; an
// event loop answers every probe (0: all of them).
unsigned count_served_at_once(const Target& target, unsigned probe) {
  std::vector<Fd> silent;
  for (unsigned held = 1; held <= probe; ++held) {
    silent.push_back(open_client(target));
    if (!new_client_answered(target)) return held;
  }
  return 0;
}

void concurrency(const Target& target, const GradeOptions& options) {
  // A server that answers no one fails the first probe too, which would read as "1 at once" and
  // pass it as simple: a client alone must be answered first.
  try {
    const Fd alone = open_client(target);
    Framer buffer(MAX_REPLY, "reply");
    ask(alone.get(), buffer, questions[0]);
  } catch (const Came& came) {
    throw Came(std::string("no client served, not even one alone: ") + came.what());
  }
  const unsigned served = count_served_at_once(target, options.probe);
  // A thread per client serves all of them at once, as an event loop does.
  const unsigned expected = options.pattern == "simple"    ? 1
                            : options.pattern == "threads" ? options.threads
                                                           : 0;
  if (served != expected) throw Came(served_at_once(served, options.probe));
}

void seeded_replies(const Target& target, std::uint32_t seed, unsigned count) {
  const Fd sock = open_client(target);
  Framer buffer(MAX_REPLY, "reply");
  std::mt19937 gen = make_generator(seed);
  for (unsigned i = 0; i < count; ++i) {
    const std::string_view question = questions[i % questions.size()];
    const std::string reply = ask(sock.get(), buffer, question);
    std::string expected;
    make_reply(question, gen, expected);
    if (reply != expected) {
      throw Came("reply " + std::to_string(i + 1) + " was " + quote(reply) + ", not " +
                 quote(expected));
    }
  }
}

// A port nobody listens on now: the kernel's choice for a socket that is closed at once. Another
// program could take it before the server binds it; then the server does not come up, and grade
// says so.
std::string free_port() {
  std::string port;
  bind_loopback(port);
  return port;
}

bool accepts_connections(const Target& target) {
  try {
    connect_to(target.host, target.port);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// A server grade started from COMMAND ARGS, on a free port, its stdout thrown away (it holds
// ports and times; its stderr reaches grade's, capped, to show why a server failed).
class StartedServer {
 public:
  StartedServer(std::vector<std::string> command, const Limits& limits)
      : command_(std::move(command)), limits_(limits) {
    start();
  }

  [[nodiscard]] const Target& target() const { return target_; }

  // After a failed check: a server that died, or that grade stopped for its memory, is started
  // again, so one crash fails one check. Returns what the check came to instead, if it ended.
  std::optional<std::string> restart_if_ended(std::string_view check) {
    // The failed connection may have come while the server was still on its way out.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (const std::optional<int> status = process_->wait(0ms)) {
        // The process grade started is gone, but others of the server serve on (a daemon):
        // nothing to start again. Unless grade killed it (its memory): then whatever still
        // holds its listening socket is on its way out too.
        if (!process_->stopped_why() && !process_->gone_within(0ms) &&
            accepts_connections(target_)) {
          return std::nullopt;
        }
        const std::string ended =
            process_->stopped_why().value_or("the server ended (" + describe_exit(*status) + ")");
        log_error(ended + " during " + std::string(check) +
                  "; starting it again for the next checks");
        process_.reset();  // kills and reaps what is left of it first
        try {
          start();
        } catch (const CannotGrade&) {
          // Out of time while it came up: the checks left are not run, and the report is kept.
          if (std::chrono::steady_clock::now() < limits_.deadline) throw;
        }
        return ended;
      }
      if (!process_->stopped_why() && accepts_connections(target_)) return std::nullopt;
      std::this_thread::sleep_for(20ms);
    }
    return std::nullopt;
  }

  // SIGTERM to the whole program; within 5 s, the process grade started must exit 0 and no
  // process of the program be left.
  void clean_shutdown() {
    process_->terminate();
    const std::optional<int> status = process_->wait(5s);
    std::string came;
    if (!status) {
      came = "still running 5 s after SIGTERM (grade killed it)";
    } else if (!exited_zero(*status)) {
      came = describe_exit(*status);
    } else if (!process_->gone_within(5s)) {
      came =
          "exit status 0, but processes it started still ran 5 s after SIGTERM (grade killed them)";
    }
    // grade killed it meanwhile (its memory, the time limit): that, not how it went, is what came
    if (const std::optional<std::string> why = process_->stopped_why()) throw Came(*why);
    if (!came.empty()) throw Came(came);
  }

 private:
  // Starts the command and waits until its port accepts connections: 10 s at most, and not past
  // the time limit.
  void start() {
    target_ = {"127.0.0.1", free_port()};
    process_.emplace("server", substitute(command_, target_.host, target_.port), Stdout::discard,
                     limits_);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!accepts_connections(target_)) {
      if (std::chrono::steady_clock::now() >= limits_.deadline ||
          process_->stopped_why() == time_ran_out) {
        throw CannotGrade("the server did not accept connections before the time limit ran out");
      }
      if (const std::optional<int> status = process_->wait(0ms)) {
        throw CannotGrade(
            process_->stopped_why().value_or("the server ended (" + describe_exit(*status) + ")") +
            " before it accepted connections");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw CannotGrade("the server did not accept connections at " +
                          format_address(target_.host, target_.port) + " within 10 s");
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  std::vector<std::string> command_;
  Limits limits_;
  Target target_;
  std::optional<Process> process_;
};
}  // namespace

void grade_server(const GradeOptions& options, Report& report) {
  std::optional<StartedServer> started;
  if (!options.command.empty()) {
    started.emplace(options.command, options.limits);
  } else if (!accepts_connections({options.host, options.port})) {
    throw CannotGrade("no server accepts connections at " +
                      format_address(options.host, options.port));
  }
  const auto check = [&](std::string_view name, const std::string& expected,
                         const std::function<void(const Target&)>& run) {
    if (out_of_time(options)) {
      report.fail(name, expected, "not run: " + time_ran_out);
      return;
    }
    try {
      run(started ? started->target() : Target{options.host, options.port});
      report.pass(name, expected);
    } catch (const Came& came) {
      if (out_of_time(options)) {  // grade stopped the server at the deadline: no restart
        report.fail(name, expected, "cut short: " + time_ran_out);
        return;
      }
      // A server that died: that is what came. (How its death showed, a refused connection or
      // a closed one, depends on timing; the report does not.)
      const std::optional<std::string> ended =
          started ? started->restart_if_ended(name) : std::nullopt;
      report.fail(name, expected, ended.value_or(came.what()));
    }
  };

  check("answers-the-three-questions", "each question answered: itself, a space, a stock reply",
        answers_the_three_questions);
  check("question-in-pieces", "one reply to a question sent a few bytes at a time",
        question_in_pieces);
  check("questions-in-one-packet", "3 replies, in order, to 3 questions sent in one packet",
        questions_in_one_packet);
  check("survives-client-error",
        "a new client answered after one sent a question without its '?' and closed",
        survives_client_error);
  check("survives-reset", "a new client answered after one reset its connection mid-question",
        survives_reset);
  if (options.max_questions && *options.max_questions > 0) {
    const unsigned limit = *options.max_questions;
    check("question-limit",
          std::to_string(limit) + " replies to " + std::to_string(limit + 3) +
              " questions, then the end of the stream",
          [limit](const Target& target) { question_limit(target, limit); });
  }
  if (!options.pattern.empty()) {
    const std::string expected = options.pattern == "simple" ? served_at_once(1, options.probe)
                                 : options.pattern == "threads"
                                     ? served_at_once(options.threads, options.probe)
                                     : served_at_once(0, options.probe);
    check("concurrency", expected + " (" + options.pattern + ")",
          [&options](const Target& target) { concurrency(target, options); });
  }
  if (options.seed) {
    // A server with a lower question limit closes first: compare what it may send.
    const unsigned count = std::min(10U, options.max_questions.value_or(0) > 0
                                             ? static_cast<unsigned>(*options.max_questions)
                                             : 10U);
    check(
        "seeded-replies",
        "the first " + std::to_string(count) + " replies as --seed " +
            std::to_string(*options.seed) + " gives them",
        [&options, count](const Target& target) { seeded_replies(target, *options.seed, count); });
  }
  if (started) {  // last, and never followed by a restart
    const std::string expected = "exit status 0 within 5 s of SIGTERM, and no process of it left";
    if (out_of_time(options)) {
      report.fail("clean-shutdown", expected, "not run: " + time_ran_out);
    } else {
      try {
        started->clean_shutdown();
        report.pass("clean-shutdown", expected);
      } catch (const Came& came) {
        report.fail("clean-shutdown", expected,
                    out_of_time(options) ? "cut short: " + time_ran_out : came.what());
      }
    }
  }
}
