// grade client: grade plays the server, on a port of its own, so it knows what each question
// should get and when each came. It serves the one client the command starts, keeps what that
// client prints, then judges the conversation.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"
#include "grade/grade.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
// grade's replies follow a fixed seed, so that what the client prints is the same on every run.
constexpr std::uint32_t reply_seed = 42;
// How long a client that is answered at once may take to ask again, or to exit.
constexpr std::chrono::seconds patience{5};

std::chrono::milliseconds milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<long>(seconds * 1000));
}

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

// The client's side of the conversation, as grade saw it.
struct Conversation {
  bool connected = false;
  Clock::time_point connected_at;
  std::vector<std::string> questions;
  std::vector<Clock::time_point> asked_at;
  std::vector<std::string> replies;  // what grade sent, one per question
  std::string sent;                  // --error: every byte the client sent
  std::string end;                   // how the client's side ended: "closed", or what came instead
  std::optional<Clock::time_point> grade_closed_at;  // --cycle: grade closed after N replies
};

// --error: everything the client sends, until it closes.
void read_until_closed(int sock, Conversation& talk) {
  char chunk[4096];
  while (talk.sent.size() <= MAX_QUESTION) {
    const ssize_t received = recv(sock, chunk, sizeof chunk, 0);
    if (received > 0) {
      talk.sent.append(chunk, static_cast<std::size_t>(received));
    } else if (received == 0) {
      talk.end = "closed";
      return;
    } else if (errno != EINTR) {
      talk.end = errno == EAGAIN ? "it sent nothing more and did not close"
                                 : std::string("recv: ") + std::strerror(errno);
      return;
    }
  }
  talk.end = "it sent more than " + std::to_string(MAX_QUESTION) + " bytes";
}

// Answers every question as a sphinx server does, until the client closes or, with --cycle,
// until N replies: then grade closes as the servers here do (half-close, drain, close). Without
// --cycle, a client that goes on asking is cut off after 100 questions.
void answer_questions(int sock, const GradeOptions& options, Conversation& talk) {
  Framer buffer(MAX_QUESTION, "question");
  std::mt19937 gen = make_generator(reply_seed);
  const std::size_t limit = options.cycle ? *options.max_questions : 100;
  while (talk.questions.size() < limit) {
    std::optional<std::string> question;
    try {
      question = recv_upto(sock, buffer, '?');
    } catch (const std::system_error& error) {
      talk.end = error.code() == std::errc::resource_unavailable_try_again
                     ? "it sent nothing more and did not close"
                     : "recv: " + error.code().message();
      return;
    } catch (const std::length_error& error) {
      talk.end = "sent a " + std::string(error.what());
      return;
    } catch (const std::runtime_error&) {
      talk.end = "closed in the middle of " + quote(buffer.pending());
      return;
    }
    if (!question) {
      talk.end = "closed";
      return;
    }
    talk.asked_at.push_back(Clock::now());
    talk.questions.push_back(*question);
    std::string reply;
    make_reply(*question, gen, reply);
    talk.replies.push_back(reply);
    try {
      send_all(sock, reply);
    } catch (const std::system_error&) {
      talk.end = "closed";
      return;
    }
  }
  if (!options.cycle) {
    talk.end = "it went on asking";
    return;
  }
  shutdown(sock, SHUT_WR);  // the end of the stream the client waits for
  talk.grade_closed_at = Clock::now();
  // Drain what the client still sends until it closes, as long as it has to exit anyway.
  const auto deadline = *talk.grade_closed_at + milliseconds(options.delay + 1);
  char chunk[4096];
  while (Clock::now() < deadline && recv(sock, chunk, sizeof chunk, 0) > 0) {
  }
}

// Accepts the client (10 s at most, less if it exits first) and holds the conversation.
Conversation converse(int listener, Process& client, const GradeOptions& options) {
  Conversation talk;
  const auto deadline = Clock::now() + 10s;
  pollfd ready{.fd = listener, .events = POLLIN, .revents = 0};
  while (poll(&ready, 1, 100) == 0) {
    if (client.wait(0ms) || Clock::now() > deadline) return talk;
  }
  const Fd sock(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!sock) throw std::system_error(errno, std::generic_category(), "accept");
  talk.connected = true;
  talk.connected_at = Clock::now();
  // A client answered at once asks again at once; with --cycle, after its delay.
  // With --cycle, the client waits its delay before each question.
  set_receive_timeout(sock.get(), options.cycle ? milliseconds(options.delay * 1.25 + 2)
                                                : std::chrono::milliseconds(patience));
  if (options.error) {
    read_until_closed(sock.get(), talk);
  } else {
    answer_questions(sock.get(), options, talk);
  }
  return talk;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string lines_text(std::size_t count) {
  return std::to_string(count) + (count == 1 ? " line" : " lines");
}

// "it asked 'A', 'B', then closed": the questions, and how the client's side ended.
std::string what_it_asked(const Conversation& talk) {
  if (!talk.connected) return "it never connected";
  std::string text = talk.questions.empty() ? "it asked nothing" : "it asked ";
  const std::size_t shown = 4;
  for (std::size_t i = 0; i < talk.questions.size() && i < shown; ++i) {
    text += (i == 0 ? "" : ", ") + quote(talk.questions[i]);
  }
  if (talk.questions.size() > shown) {
    text += " and " + std::to_string(talk.questions.size() - shown) + " more";
  }
  if (talk.end.empty()) return text;
  return text + ", then " + (talk.end == "closed" ? "closed" : talk.end);
}

void asks_the_three_questions(const Conversation& talk) {
  if (talk.questions.size() != questions.size() || talk.end != "closed" ||
      !std::equal(questions.begin(), questions.end(), talk.questions.begin())) {
    throw Came(what_it_asked(talk));
  }
}

void prints_each_reply(const Conversation& talk, const std::string& printed) {
  if (printed.empty()) throw Came("it printed nothing");
  const std::vector<std::string> lines = split_lines(printed);
  for (std::size_t i = 0; i < lines.size() && i < talk.replies.size(); ++i) {
    if (lines[i] != talk.replies[i]) {
      throw Came("line " + std::to_string(i + 1) + " was " + quote(lines[i]));
    }
  }
  if (lines.size() != talk.replies.size()) throw Came("it printed " + lines_text(lines.size()));
  if (!printed.ends_with('\n')) throw Came("its last line did not end with a newline");
}

void exits_zero(const std::optional<int>& status, const std::string& when) {
  if (!status) throw Came("still running " + when + " (grade killed it)");
  if (!exited_zero(*status)) throw Came(describe_exit(*status));
}

void sends_a_question_without_its_mark(const Conversation& talk) {
  if (!talk.connected) throw Came("it never connected");
  if (talk.sent.empty()) throw Came("it sent nothing, then " + talk.end);
  if (talk.sent.find('?') != std::string::npos) throw Came("it sent " + quote(talk.sent));
  if (talk.end != "closed") throw Came("it sent " + quote(talk.sent) + ", then " + talk.end);
}

void cycles_through_the_questions(const Conversation& talk, unsigned count) {
  for (std::size_t i = 0; i < talk.questions.size(); ++i) {
    if (talk.questions[i] != questions[i % questions.size()]) {
      throw Came("question " + std::to_string(i + 1) + " was " + quote(talk.questions[i]));
    }
  }
  if (talk.questions.size() < count) {
    throw Came("it asked " + std::to_string(talk.questions.size()) + " questions, then " +
               talk.end);
  }
}

// The gap before each question: from the connection to the first, then from each to the next.
void waits_before_each_question(const Conversation& talk, double delay) {
  if (talk.questions.empty()) throw Came(what_it_asked(talk));
  // 25% either way; at least 10 ms, so that a delay near 0 can pass at all.
  const double slack = std::max(delay * 0.25, 0.01);
  Clock::time_point before = talk.connected_at;
  for (std::size_t i = 0; i < talk.asked_at.size(); ++i) {
    const double gap = std::chrono::duration<double>(talk.asked_at[i] - before).count();
    if (gap < delay - slack || gap > delay + slack) {
      std::string came = "question " + std::to_string(i + 1);
      came += gap < delay ? " came less than " + seconds_text(delay - slack)
                          : " came more than " + seconds_text(delay + slack);
      came += i == 0 ? " after the connection" : " after question " + std::to_string(i);
      throw Came(came);
    }
    before = talk.asked_at[i];
  }
}

void stops_when_the_server_closes(const Conversation& talk, const std::optional<int>& status,
                                  const std::string& printed, unsigned count, double delay) {
  if (!talk.grade_closed_at) throw Came("grade never closed: " + what_it_asked(talk));
  exits_zero(status, seconds_text(delay + 1) + " after grade closed");
  const std::size_t lines = split_lines(printed).size();
  if (lines != count) throw Came("it printed " + lines_text(lines));
}
}  // namespace

void grade_client(const GradeOptions& options, Report& report) {
  std::string port;
  const Fd listener = bind_loopback(port);
  if (listen(listener.get(), SOMAXCONN) != 0) {
    throw std::system_error(errno, std::generic_category(), "listen");
  }
  Process client("client", substitute(options.command, "127.0.0.1", port), Stdout::keep,
                 options.limits);
  const Conversation talk = converse(listener.get(), client, options);

  // How long the client may take to exit: with --cycle, S + 1 s after grade closed.
  std::string when = "5 s after its last question";
  auto exit_deadline = Clock::now() + patience;
  if (talk.grade_closed_at) {
    when = seconds_text(options.delay + 1) + " after grade closed";
    exit_deadline = *talk.grade_closed_at + milliseconds(options.delay + 1);
  }
  const auto left = std::max(exit_deadline - Clock::now(), Clock::duration::zero());
  const std::optional<int> status =
      client.wait(std::chrono::duration_cast<std::chrono::milliseconds>(left));
  client.stop();
  const std::string& printed = client.printed();
  // A client grade stopped (its memory, the time limit) is judged by that alone.
  std::optional<std::string> stopped = client.stopped_why();
  if (stopped == time_ran_out) stopped = "cut short: " + time_ran_out;

  const auto check = [&](std::string_view name, const std::string& expected, auto&& run) {
    try {
      if (stopped) throw Came(*stopped);
      run();
      report.pass(name, expected);
    } catch (const Came& came) {
      report.fail(name, expected, came.what());
    }
  };
  if (options.error) {
    check("sends-a-question-without-its-mark-then-closes",
          "part of a question, without its '?', then the end of the stream",
          [&] { sends_a_question_without_its_mark(talk); });
  } else if (options.cycle) {
    const unsigned count = *options.max_questions;
    check("cycles-through-the-questions",
          "the three questions in order, over and over, until grade closed after " +
              std::to_string(count) + " replies",
          [&] { cycles_through_the_questions(talk, count); });
    check("waits-before-each-question",
          seconds_text(options.delay) + " (within 25%) before each question",
          [&] { waits_before_each_question(talk, options.delay); });
    check("stops-when-the-server-closes",
          "exit status 0 within " + seconds_text(options.delay + 1) + " of grade closing after " +
              std::to_string(count) + " replies, " + lines_text(count) + " printed",
          [&] { stops_when_the_server_closes(talk, status, printed, count, options.delay); });
  } else {
    check("asks-the-three-questions", "the lab's three questions, in order, then the end",
          [&] { asks_the_three_questions(talk); });
    check("prints-each-reply", "each reply grade sent on a line of its own, nothing else",
          [&] { prints_each_reply(talk, printed); });
    check("exits-zero", "exit status 0", [&] { exits_zero(status, when); });
  }
}
