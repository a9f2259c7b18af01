// loadgen: a closed-loop load generator for the sphinx protocol, for make bench.
//
//   loadgen HOST PORT --connections N --seconds S --warmup S [--pipeline P] [--server-pid PID]
//   loadgen HOST PORT --hold N --seconds S [--server-pid PID]   (C10K: N idle, then one question
//   each) loadgen HOST PORT --idle K --seconds S                     (denial of service: K silent
//   clients)
//
// One thread, one epoll loop. Every reply is checked: the question sent, a space, one of the five
// stock replies; anything else is an error, never a success. Latency per question goes into a
// log-linear histogram. With --server-pid it also reads the server's CPU time, context switches
// and (through perf, where present) system calls over the measured window.
//
// Per-question latency counts only questions that were answered: a server that serves one
// connection and leaves the others waiting looks fast. So loadgen also measures what each client
// felt: per connection, the time from its first question to its first reply. A connection never
// answered counts at its age when loadgen stops (for one opened at the start, the warm-up and
// the window), which is only a lower bound of its wait; a percentile that falls on one is
// reported as a lower bound ("at least"). The per-question percentiles are not corrected for
// coordinated omission: the load is closed-loop, with no intended rate and so no expected interval
// to fill in (as wrk2 and HdrHistogram's recordValueWithExpectedInterval do); the per-connection
// wait is what shows the clients a server leaves waiting.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

#include "bench/proc.hpp"
#include "common/cli.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

namespace {
using Clock = std::chrono::steady_clock;

// Latencies in nanoseconds, in buckets 1/16 of a power of two wide: 6% resolution at any scale.
class Histogram {
 public:
  void add(std::uint64_t ns) {
    ++counts_[bucket(ns)];
    ++total_;
    max_ = std::max(max_, ns);
  }
  [[nodiscard]] std::uint64_t percentile(double p) const {
    const auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(total_));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) return std::min(upper(i), max_);
    }
    return max_;
  }
  [[nodiscard]] std::uint64_t max() const { return max_; }
  [[nodiscard]] std::uint64_t total() const { return total_; }

 private:
  static std::size_t bucket(std::uint64_t v) {
    if (v < 16) return v;
    const auto e = static_cast<int>(std::bit_width(v)) - 1;  // v is in [2^e, 2^(e+1))
    return 16 + static_cast<std::size_t>(e - 4) * 16 + ((v >> (e - 4)) - 16);
  }
  static std::uint64_t upper(std::size_t i) {
    if (i < 16) return i;
    const std::size_t e = (i - 16) / 16 + 4;
    return ((16 + (i - 16) % 16 + 1) << (e - 4)) - 1;
  }
  std::array<std::uint64_t, 16 + 60 * 16> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

// The server's own counters, read from /proc (and perf for system calls).
struct ServerSample {
  double cpu_seconds = 0;
  long context_switches = 0;
  long threads = 0;
  long rss_kib = 0;
  long peak_rss_kib = 0;
};

ServerSample sample_server(pid_t pid) {
  ServerSample s;
  if (pid <= 0) return s;
  s.cpu_seconds = proc_cpu_seconds(pid);
  s.context_switches = proc_context_switches(pid);
  s.threads = proc_status_field(pid, "Threads:");
  s.rss_kib = proc_status_field(pid, "VmRSS:");
  s.peak_rss_kib = proc_status_field(pid, "VmHWM:");
  return s;
}

// perf counting the server's system calls between start() and stop(); -1 where perf is missing.
class SyscallCounter {
 public:
  void start(pid_t server) {
    if (server <= 0) return;
    output_ = std::filesystem::temp_directory_path() / ("loadgen-perf-" + std::to_string(getpid()));
    const std::string pid_text = std::to_string(server);
    pid_ = fork();
    if (pid_ == 0) {
      const char* argv[] = {
          "perf",           "stat", "-x,",           "-e",   "raw_syscalls:sys_enter", "-p",
          pid_text.c_str(), "-o",   output_.c_str(), nullptr};
      execvp("perf", const_cast<char* const*>(argv));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // perf attaches
  }
  long long stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGINT);
    int status = 0;
    waitpid(pid_, &status, 0);
    std::ifstream in(output_);
    long long count = -1;
    for (std::string line; std::getline(in, line);) {
      if (line.find("raw_syscalls:sys_enter") != std::string::npos) {
        try {
          count = std::stoll(line.substr(0, line.find(',')));
        } catch (const std::exception&) {
        }
      }
    }
    std::filesystem::remove(output_);
    return count;
  }

 private:
  pid_t pid_ = -1;
  std::string output_;
};

struct Options {
  std::string host;
  std::string port;
  unsigned connections = 1;
  unsigned pipeline = 1;
  double seconds = 5;
  double warmup = 1;
  unsigned hold = 0;
  unsigned idle = 0;
  unsigned server_pid = 0;
  bool json = false;
};

// One connection and the questions it has in flight, oldest first.
struct Conn {
  Fd sock;
  Framer unread{MAX_REPLY, "reply"};
  std::string unsent;
  std::deque<std::pair<std::size_t, Clock::time_point>> in_flight;  // question, when it was sent
  std::size_t next_question = 0;
  Clock::time_point first_asked;    // when its first question went out
  bool answered = false;            // has had its first reply
  bool served = false;              // answered at least once in the measured window
  std::uint32_t watched = EPOLLIN;  // what epoll watches for now
};

// How long a connection waited for its first reply; never_answered: it had none when it ended or
// loadgen stopped, and `wait` is its age then, a lower bound.
struct FirstReply {
  Clock::duration wait;
  bool never_answered;
};

struct Counts {
  std::uint64_t answered = 0;
  std::uint64_t errors = 0;
  std::uint64_t reconnects = 0;
  std::uint64_t lost = 0;  // in flight when the server closed the connection
};

bool valid_reply(std::string_view reply, std::string_view question) {
  if (reply.size() < question.size() + 2 || reply.substr(0, question.size()) != question ||
      reply[question.size()] != ' ') {
    return false;
  }
  const std::string_view stock = reply.substr(question.size() + 1);
  return std::find(replies.begin(), replies.end(), stock) != replies.end();
}

class LoadGenerator {
 public:
  explicit LoadGenerator(const Options& options) : options_(options), epoll_(epoll_create1(0)) {}

  Fd open_connection() {
    Fd sock = connect_to(options_.host, options_.port);
    const int flags = fcntl(sock.get(), F_GETFL);
    fcntl(sock.get(), F_SETFL, flags | O_NONBLOCK);
    return sock;
  }

  void add(std::size_t index) {
    epoll_event event{.events = EPOLLIN, .data = {.u64 = index}};
    epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, conns_[index].sock.get(), &event);
  }

  void ask(Conn& c, bool measured) {
    if (c.next_question == 0) c.first_asked = Clock::now();
    const std::size_t q = c.next_question++ % questions.size();
    c.unsent += questions[q];
    c.in_flight.emplace_back(q, measured ? Clock::now() : Clock::time_point{});
  }

  void flush(std::size_t index) {
    Conn& c = conns_[index];
    const ssize_t sent = send(c.sock.get(), c.unsent.data(), c.unsent.size(), MSG_NOSIGNAL);
    if (sent > 0) c.unsent.erase(0, static_cast<std::size_t>(sent));
    // As in server_epoll: epoll_ctl only when the interest changes, so loadgen's own cost per
    // question stays a send and a recv.
    const std::uint32_t want = c.unsent.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT;
    if (want == c.watched) return;
    epoll_event event{.events = want, .data = {.u64 = index}};
    epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.sock.get(), &event);
    c.watched = want;
  }

  // The server closed the connection (its --max-questions), broke it, or sent a wrong reply: the
  // wrong reply is an error, the other questions in flight are lost; start a new connection.
  void reconnect(std::size_t index, bool wrong_reply) {
    Conn& c = conns_[index];
    if (!c.answered) first_replies_.push_back({Clock::now() - c.first_asked, true});
    if (wrong_reply) ++counts_.errors;
    if (measuring_) {
      counts_.lost += c.in_flight.size() - (wrong_reply ? 1 : 0);
      ++counts_.reconnects;
    }
    const bool served = c.served;
    c = Conn{};
    c.served = served;
    c.sock = open_connection();
    add(index);
    for (unsigned i = 0; i < options_.pipeline; ++i) ask(c, measuring_);
    flush(index);
  }

  void on_readable(std::size_t index, std::span<char> buffer) {
    Conn& c = conns_[index];
    const ssize_t n = recv(c.sock.get(), buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) return reconnect(index, false);
    c.unread.append({buffer.data(), static_cast<std::size_t>(n)});
    const auto now = Clock::now();
    while (!c.in_flight.empty()) {
      const auto [q, sent_at] = c.in_flight.front();
      std::optional<std::string_view> reply;
      try {
        reply = c.unread.next('.', questions[q].size());
      } catch (const std::length_error&) {
        return reconnect(index, true);
      }
      if (!reply) break;
      if (!valid_reply(*reply, questions[q])) return reconnect(index, true);
      c.in_flight.pop_front();
      if (!c.answered) {
        c.answered = true;
        first_replies_.push_back({now - c.first_asked, false});
      }
      if (measuring_ && sent_at != Clock::time_point{}) {
        ++counts_.answered;
        c.served = true;
        histogram_.add(static_cast<std::uint64_t>((now - sent_at).count()));
      }
      ask(c, measuring_);
    }
    if (!c.unsent.empty()) flush(index);
  }

  // The closed loop: warm up, then measure for options.seconds.
  void run_load() {
    conns_.resize(options_.connections);
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      conns_[i].sock = open_connection();
      add(i);
    }
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      for (unsigned k = 0; k < options_.pipeline; ++k) ask(conns_[i], false);
      flush(i);
    }
    const auto start = Clock::now();
    const auto measure_from = start + std::chrono::duration<double>(options_.warmup);
    auto measure_to = Clock::time_point::max();
    std::vector<epoll_event> ready(1024);
    std::array<char, std::size_t{64} * 1024> buffer{};
    while (true) {
      const auto now = Clock::now();
      if (!measuring_ && now >= measure_from) {
        measuring_ = true;
        syscalls_.start(static_cast<pid_t>(options_.server_pid));
        before_ = sample_server(static_cast<pid_t>(options_.server_pid));
        window_start_ = Clock::now();  // after perf has attached
        measure_to = window_start_ + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(options_.seconds));
      }
      if (measuring_ && now >= measure_to) break;
      const int count = epoll_wait(epoll_.get(), ready.data(), static_cast<int>(ready.size()), 10);
      for (int i = 0; i < count; ++i) {
        const std::size_t index = ready[i].data.u64;
        if (ready[i].events & EPOLLOUT) flush(index);
        if (ready[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(index, buffer);
      }
    }
    const auto end = Clock::now();
    for (const Conn& c : conns_) {
      if (!c.answered) first_replies_.push_back({end - c.first_asked, true});
    }
    after_ = sample_server(static_cast<pid_t>(options_.server_pid));
    syscall_count_ = syscalls_.stop();
    window_ = std::chrono::duration<double>(Clock::now() - window_start_).count();
    report_load();
  }

  // C10K: hold N idle connections, then ask one question on each.
  void run_hold() {
    const ServerSample before = sample_server(static_cast<pid_t>(options_.server_pid));
    std::vector<Fd> held;
    held.reserve(options_.hold);
    for (unsigned i = 0; i < options_.hold; ++i) held.push_back(open_connection());
    std::this_thread::sleep_for(std::chrono::duration<double>(options_.seconds));
    const ServerSample idle = sample_server(static_cast<pid_t>(options_.server_pid));
    for (const Fd& sock : held) send_all(sock.get(), questions[0]);
    std::vector<pollfd> waiting;
    for (const Fd& sock : held) waiting.push_back({sock.get(), POLLIN, 0});
    std::uint64_t answered = 0;
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    std::vector<Framer> unread(held.size(), Framer(MAX_REPLY, "reply"));
    std::array<char, 4096> buffer{};
    while (answered + counts_.errors < held.size() && Clock::now() < deadline) {
      if (poll(waiting.data(), waiting.size(), 100) <= 0) continue;
      for (std::size_t i = 0; i < waiting.size(); ++i) {
        if (waiting[i].revents == 0) continue;
        const ssize_t n = recv(waiting[i].fd, buffer.data(), buffer.size(), 0);
        waiting[i].fd = -1;  // one reply each: stop watching
        if (n <= 0) {
          ++counts_.errors;
          continue;
        }
        unread[i].append({buffer.data(), static_cast<std::size_t>(n)});
        const auto reply = unread[i].next('.', questions[0].size());
        if (reply && valid_reply(*reply, questions[0])) {
          ++answered;
        } else {
          ++counts_.errors;
        }
      }
    }
    const ServerSample end = sample_server(static_cast<pid_t>(options_.server_pid));
    // What the server's memory grew by per held connection (RSS: its own memory, not the
    // kernel's socket buffers).
    const long per_idle = (idle.rss_kib - before.rss_kib) * 1024 / std::max(options_.hold, 1U);
    if (options_.json) {
      std::printf("{\"held\": %u, \"answered\": %" PRIu64 ", \"errors\": %" PRIu64
                  ", \"server_threads\": %ld, \"server_idle_rss_kib\": %ld"
                  ", \"server_peak_rss_kib\": %ld, \"server_bytes_per_idle_connection\": %ld}\n",
                  options_.hold, answered, counts_.errors, std::max(idle.threads, end.threads),
                  idle.rss_kib, end.peak_rss_kib, per_idle);
    } else {
      std::printf("held %u connections: %" PRIu64 " answered, %" PRIu64
                  " errors; server: %ld threads, RSS %ld KiB idle (%ld bytes per connection),"
                  " %ld KiB at the peak\n",
                  options_.hold, answered, counts_.errors, std::max(idle.threads, end.threads),
                  idle.rss_kib, per_idle, end.peak_rss_kib);
    }
  }

  // Denial of service: K silent connections, then how long a new client waits for its answer.
  void run_idle() {
    std::vector<Fd> silent;
    silent.reserve(options_.idle);
    for (unsigned i = 0; i < options_.idle; ++i) silent.push_back(open_connection());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the server accepts them
    const Fd asker = open_connection();
    const auto start = Clock::now();
    send_all(asker.get(), questions[0]);
    pollfd ready{asker.get(), POLLIN, 0};
    const bool answered = poll(&ready, 1, static_cast<int>(options_.seconds * 1000)) > 0;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (options_.json) {
      std::printf("{\"silent\": %u, \"answered\": %s, \"waited_ms\": %.3f}\n", options_.idle,
                  answered ? "true" : "false", waited * 1000);
    } else if (answered) {
      std::printf("with %u silent clients, a new client was answered in %.3f ms\n", options_.idle,
                  waited * 1000);
    } else {
      std::printf("with %u silent clients, a new client was blocked (no answer in %.1f s)\n",
                  options_.idle, options_.seconds);
    }
  }

 private:
  // A percentile of the per-connection waits (nearest rank), in ms. If it falls on a connection
  // never answered, its value is that connection's age: the percentile is at least that.
  struct Wait {
    double ms;
    bool at_least;
  };
  [[nodiscard]] static Wait first_reply(std::span<const FirstReply> sorted, double p) {
    if (sorted.empty()) return {0, false};
    const auto rank = static_cast<std::size_t>(
        std::max(1.0, std::ceil(p / 100.0 * static_cast<double>(sorted.size()))));
    const FirstReply& at = sorted[std::min(rank, sorted.size()) - 1];
    return {std::chrono::duration<double, std::milli>(at.wait).count(), at.never_answered};
  }

  void report_load() {
    std::sort(first_replies_.begin(), first_replies_.end(),
              [](const FirstReply& a, const FirstReply& b) { return a.wait < b.wait; });
    const auto never = std::count_if(first_replies_.begin(), first_replies_.end(),
                                     [](const FirstReply& r) { return r.never_answered; });
    const Wait w50 = first_reply(first_replies_, 50);
    const Wait w99 = first_reply(first_replies_, 99);
    const Wait wmax = first_reply(first_replies_, 100);
    const double rate = static_cast<double>(counts_.answered) / window_;
    const double per_q = counts_.answered > 0 ? 1.0 / static_cast<double>(counts_.answered) : 0;
    const double cpu_us = (after_.cpu_seconds - before_.cpu_seconds) * 1e6 * per_q;
    const double switches =
        static_cast<double>(after_.context_switches - before_.context_switches) * per_q;
    const double calls = syscall_count_ < 0 ? -1 : static_cast<double>(syscall_count_) * per_q;
    const double busy = (after_.cpu_seconds - before_.cpu_seconds) / window_ * 100;
    const auto served =
        std::count_if(conns_.begin(), conns_.end(), [](const Conn& c) { return c.served; });
    const auto us = [this](double p) {
      return static_cast<double>(histogram_.percentile(p)) / 1e3;
    };
    if (options_.json) {
      std::printf(
          "{\"connections\": %u, \"served\": %ld, \"pipeline\": %u, \"seconds\": %.2f, "
          "\"questions_per_second\": "
          "%.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
          "\"answered\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"reconnects\": %" PRIu64
          ", \"lost\": %" PRIu64
          ", \"server_cpu_us_per_question\": %.2f, \"server_syscalls_per_question\": %.2f, "
          "\"server_context_switches_per_question\": %.3f, \"server_cpu_busy_percent\": %.0f, "
          "\"server_threads\": %ld, \"first_reply_connections\": %zu, \"never_answered\": %ld, "
          "\"first_reply_p50_ms\": %.3f, \"first_reply_p50_at_least\": %s, "
          "\"first_reply_p99_ms\": %.3f, \"first_reply_p99_at_least\": %s, "
          "\"first_reply_max_ms\": %.3f, \"first_reply_max_at_least\": %s}\n",
          options_.connections, static_cast<long>(served), options_.pipeline, window_, rate, us(50),
          us(99), us(99.9), static_cast<double>(histogram_.max()) / 1e3, counts_.answered,
          counts_.errors, counts_.reconnects, counts_.lost, cpu_us, calls, switches, busy,
          after_.threads, first_replies_.size(), static_cast<long>(never), w50.ms,
          w50.at_least ? "true" : "false", w99.ms, w99.at_least ? "true" : "false", wmax.ms,
          wmax.at_least ? "true" : "false");
    } else {
      std::printf(
          "%u connections (%ld served) x %u in flight, %.1f s: %.0f questions/s; latency p50 %.1f "
          "us, p99 "
          "%.1f us, p99.9 %.1f us, max %.1f us; %" PRIu64 " errors, %" PRIu64
          " reconnects, %" PRIu64 " lost\n",
          options_.connections, static_cast<long>(served), options_.pipeline, window_, rate, us(50),
          us(99), us(99.9), static_cast<double>(histogram_.max()) / 1e3, counts_.errors,
          counts_.reconnects, counts_.lost);
      const auto at_least = [](const Wait& w) { return w.at_least ? "at least " : ""; };
      std::printf(
          "time to first reply, over %zu connections (%ld never answered): p50 %s%.3f ms, p99 "
          "%s%.3f ms, max %s%.3f ms\n",
          first_replies_.size(), static_cast<long>(never), at_least(w50), w50.ms, at_least(w99),
          w99.ms, at_least(wmax), wmax.ms);
      if (options_.server_pid != 0) {
        std::printf(
            "server per question: %.2f us CPU, %.2f system calls, %.3f context switches; "
            "server CPU busy %.0f%%\n",
            cpu_us, calls, switches, busy);
      }
    }
  }

  const Options& options_;
  Fd epoll_;
  std::vector<Conn> conns_;
  Counts counts_;
  Histogram histogram_;
  std::vector<FirstReply> first_replies_;  // one per connection, in the whole run
  bool measuring_ = false;
  SyscallCounter syscalls_;
  long long syscall_count_ = -1;
  ServerSample before_;
  ServerSample after_;
  Clock::time_point window_start_;
  double window_ = 0;
};
constexpr std::string_view usage =
    "usage: loadgen HOST PORT [--connections N] [--pipeline N] [--seconds SECONDS] "
    "[--warmup SECONDS] [--hold N] [--idle N] [--server-pid N] [--json]\n"
    "  HOST                  the server's address\n"
    "  PORT                  the server's port\n"
    "  --connections N       connections to keep busy (default 1)\n"
    "  --pipeline N          questions in flight on each connection (default 1)\n"
    "  --seconds SECONDS     how long to measure, hold or wait (default 5)\n"
    "  --warmup SECONDS      seconds of load before measuring (default 1)\n"
    "  --hold N              C10K: hold N idle connections, then ask once on each\n"
    "  --idle N              open N silent connections, then time one new client\n"
    "  --server-pid N        read this server's CPU, context switches, system calls\n"
    "  --json                one JSON object instead of text\n"
    "  -h, --help            print this help and exit\n";

std::optional<Options> read_options(int argc, char* argv[]) {
  Options o;
  const std::array<option, 8> long_options = {{{"connections", required_argument, nullptr, 'c'},
                                               {"pipeline", required_argument, nullptr, 'p'},
                                               {"seconds", required_argument, nullptr, 's'},
                                               {"warmup", required_argument, nullptr, 'w'},
                                               {"hold", required_argument, nullptr, 'H'},
                                               {"idle", required_argument, nullptr, 'i'},
                                               {"server-pid", required_argument, nullptr, 'P'},
                                               {"json", no_argument, nullptr, 'j'}}};
  const auto arguments =
      parse_command_line(argc, argv, "", long_options, [&](int val, const char* value) {
        switch (val) {
          case 'c':
            o.connections = parse_uint(value, "--connections", 1);
            break;
          case 'p':
            o.pipeline = parse_uint(value, "--pipeline", 1);
            break;
          case 's':
            o.seconds = parse_seconds(value, "--seconds");
            break;
          case 'w':
            o.warmup = parse_seconds(value, "--warmup");
            break;
          case 'H':
            o.hold = parse_uint(value, "--hold");
            break;
          case 'i':
            o.idle = parse_uint(value, "--idle");
            break;
          case 'P':
            o.server_pid = parse_uint(value, "--server-pid");
            break;
          default:
            o.json = true;
        }
      });
  if (!arguments) return std::nullopt;
  check_arguments(*arguments, {"HOST", "PORT"}, 2);
  o.host = (*arguments)[0];
  o.port = (*arguments)[1];
  parse_uint(o.port, "PORT", 0, 65535);
  return o;
}
}  // namespace

int main(int argc, char* argv[]) try {
  const Options options =
      options_or_exit("loadgen", usage, [&] { return read_options(argc, argv); });

  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  LoadGenerator load(options);
  if (options.hold > 0) {
    load.run_hold();
  } else if (options.idle > 0) {
    load.run_idle();
  } else {
    load.run_load();
  }
  return 0;
} catch (const std::exception& error) {
  return fail(error);
}
