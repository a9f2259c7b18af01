#include "tests/support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "bench/proc.hpp"
#include "common/net.hpp"

namespace {
std::pair<Fd, Fd> make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  return {Fd(fds[0]), Fd(fds[1])};
}
}  // namespace

Child::Child(const std::string& program, const std::vector<std::string>& args, rlim_t max_files) {
  const std::string path =
      program.starts_with('/') ? program : std::string(BIN_DIR) + "/" + program;
  std::vector<std::string> argv_strings{path};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(argv_strings.size() + 1);
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const rlimit limit{max_files, max_files};

  auto [out_read, out_write] = make_pipe();
  auto [err_read, err_write] = make_pipe();
  pid_ = fork();
  if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid_ == 0) {  // only async-signal-safe calls between fork and exec
    dup2(out_write.get(), STDOUT_FILENO);
    dup2(err_write.get(), STDERR_FILENO);
    if (max_files != 0) setrlimit(RLIMIT_NOFILE, &limit);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  reader_ = std::jthread(&Child::drain_pipes, this, std::move(out_read), std::move(err_read));
}

Child::~Child() {
  if (!status_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void Child::drain_pipes(Fd out, Fd err) {
  while (out || err) {
    pollfd fds[2] = {{out.get(), POLLIN, 0}, {err.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      Fd& pipe = i == 0 ? out : err;
      char chunk[65536];
      const ssize_t n = read(pipe.get(), chunk, sizeof chunk);
      const std::scoped_lock lock(mutex_);
      if (n > 0) {
        (i == 0 ? out_ : err_).append(chunk, static_cast<std::size_t>(n));
      } else {
        pipe.reset();  // end of stream: poll ignores a negative descriptor from now on
      }
      changed_.notify_all();
    }
  }
  const std::scoped_lock lock(mutex_);
  pipes_closed_ = true;
  changed_.notify_all();
}

std::optional<std::string> Child::read_line(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  std::size_t end = std::string::npos;
  changed_.wait_for(lock, timeout, [&] {
    end = out_.find('\n', out_read_);
    return end != std::string::npos || pipes_closed_;
  });
  if (end == std::string::npos) return std::nullopt;
  std::string line = out_.substr(out_read_, end - out_read_);
  out_read_ = end + 1;
  return line;
}

std::optional<int> Child::wait_exit(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  {
    // The pipes close when the child exits (its output is all read by then).
    std::unique_lock lock(mutex_);
    if (!changed_.wait_until(lock, deadline, [&] { return pipes_closed_; })) {
      waited_in_vain_ = true;
      return std::nullopt;
    }
  }
  int status = 0;
  // A child that closed its pipes and lives on is not waited for forever either.
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      waited_in_vain_ = true;
      return std::nullopt;
    }
    usleep(1000);
  }
  status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return status_;
}

void Child::send_signal(int signal) const { kill(pid_, signal); }

std::string Child::out() const {
  const std::scoped_lock lock(mutex_);
  return out_;
}

std::string Child::err() const {
  const std::scoped_lock lock(mutex_);
  return err_;
}

Server::Server(const std::string& program, const std::vector<std::string>& options,
               rlim_t max_files)
    : Child(
          program,
          [&] {
            std::vector<std::string> args{"127.0.0.1", "0"};
            args.insert(args.end(), options.begin(), options.end());
            if (program == "server_epoll") {
              args.insert(args.end(), server_args().begin(), server_args().end());
            }
            return args;
          }(),
          max_files),
      program(program) {
  const std::optional<std::string> line = read_line(10s);  // a sanitized start-up takes a while
  const std::string prefix = "Listening for incoming connections at 127.0.0.1:";
  if (!line || line->rfind(prefix, 0) != 0) {
    throw std::runtime_error(program + " did not start: " + line.value_or("") + err());
  }
  port = line->substr(prefix.size());
}

Server::~Server() {
  if (exited() || waited_in_vain()) return;  // the test has seen it end, or has failed on it
  send_signal(SIGTERM);
  std::optional<int> code = wait_exit(under_thread_sanitizer ? 2s : stop_timeout);
  if (!code && under_thread_sanitizer) {
    // See tsan_cannot_signal: the second SIGTERM interrupts the blocked call (the handler has no
    // SA_RESTART), and TSan runs the handler for the held-back one as that call returns. Any
    // server's thread may be the one in accept4 or recv (server_threads' pool too, seen once in
    // 249 tests under TSan), so every server gets it there; the plain and ASan builds never do.
    send_signal(SIGTERM);
    code = wait_exit(stop_timeout);
  }
  EXPECT_EQ(code, 0) << program << " did not shut down cleanly on SIGTERM"
                     << (code ? ""
                              : " (still running " + std::to_string(stop_timeout.count()) +
                                    " ms after it)");
  // As written, line by line: a sanitizer's report is read, not decoded.
  EXPECT_TRUE(err().empty()) << program << " wrote to stderr:\n" << err();
}

const std::vector<std::string>& server_args() {
  static const std::vector<std::string> words = [] {
    const char* given = std::getenv("SERVER_ARGS");
    std::istringstream text(given != nullptr ? given : "");
    return std::vector<std::string>(std::istream_iterator<std::string>(text), {});
  }();
  return words;
}

void set_timeouts(int sock, std::chrono::seconds timeout) {
  const timeval limit{.tv_sec = timeout.count(), .tv_usec = 0};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

Fd connect_port(const std::string& port) {
  Fd sock = connect_to("127.0.0.1", port);
  set_timeouts(sock.get());
  return sock;
}

Fd accept_within(int listener, std::chrono::milliseconds timeout) {
  if (!readable_within(listener, timeout)) throw std::runtime_error("nobody connected");
  Fd sock(accept(listener, nullptr, nullptr));
  if (!sock) throw std::system_error(errno, std::generic_category(), "accept");
  set_timeouts(sock.get());
  return sock;
}

namespace {
// The length of the reply to `question` at the start of `got`, or 0 while it is not whole;
// `possible` turns false once `got` cannot become a right reply, however many bytes follow.
std::size_t whole_reply(std::string_view got, std::string_view question, bool& possible) {
  const std::string echo = std::string(question) + " ";
  possible = true;
  const std::size_t head = std::min(got.size(), echo.size());
  if (got.substr(0, head) != std::string_view(echo).substr(0, head)) {
    possible = false;
    return 0;
  }
  if (got.size() <= echo.size()) return 0;
  const std::string_view rest = got.substr(echo.size());
  possible = false;
  for (const std::string_view reply : replies) {
    if (rest.starts_with(reply)) return echo.size() + reply.size();
    possible = possible || reply.starts_with(rest);
  }
  return 0;
}

std::string shown(std::string_view bytes) { return "'" + escape(bytes) + "'"; }
}  // namespace

std::optional<std::string> read_reply(int sock, ReplyBuffer& buffer, std::string_view question) {
  for (;;) {
    bool possible = true;
    if (const std::size_t size = whole_reply(buffer.pending, question, possible); size != 0) {
      std::string reply = buffer.pending.substr(0, size);
      buffer.pending.erase(0, size);
      return reply;
    }
    if (!possible) return std::exchange(buffer.pending, "");  // a wrong reply: fail now
    char chunk[4096];
    const ssize_t n = recv(sock, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer.pending.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      if (buffer.pending.empty()) return std::nullopt;
      return std::exchange(buffer.pending, "");  // half a reply, then the close
    } else if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(),
                              "no whole reply to " + shown(question) + " (got " +
                                  shown(buffer.pending) + ") before the socket's timeout: recv");
    }
  }
}

std::string receive_expected(int sock, std::string_view expected) {
  std::string got;
  char chunk[65536];
  while (got.size() < expected.size()) {
    const ssize_t n = recv(sock, chunk, std::min(sizeof chunk, expected.size() - got.size()), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) got.append(chunk, static_cast<std::size_t>(n));
    const std::size_t same = static_cast<std::size_t>(
        std::mismatch(got.begin(), got.end(), expected.begin()).first - got.begin());
    if (same == got.size() && n > 0) continue;
    const std::size_t from = same < 40 ? 0 : same - 40;  // where it went wrong, in context
    const std::string why = n > 0    ? "differs at byte " + std::to_string(same)
                            : n == 0 ? "the peer closed after byte " + std::to_string(same)
                                     : "nothing more came after byte " + std::to_string(same) +
                                           " (" + std::strerror(errno) + ")";
    return why + " of " + std::to_string(expected.size()) + ": expected ..." +
           shown(expected.substr(from, 80)) + ", got ..." +
           shown(std::string_view(got).substr(from, 80));
  }
  return "";
}

bool tsan_cannot_signal(const std::string& server) {
  return under_thread_sanitizer &&
         (server == "server_simple" || server == "server_thread_per_client");
}

std::string ask(int sock, ReplyBuffer& buffer, std::string_view question) {
  send_all(sock, question);
  return read_reply(sock, buffer, question).value_or("<closed>");
}

bool starts_with(const std::optional<std::string>& line, std::string_view prefix) {
  return line && line->rfind(prefix, 0) == 0;
}

std::size_t flood(int sock, char byte, std::size_t limit) {
  const int flags = fcntl(sock, F_GETFL);
  fcntl(sock, F_SETFL, flags | O_NONBLOCK);
  const std::string chunk(std::size_t{64} * 1024, byte);
  std::size_t sent = 0;
  while (sent < limit) {
    const ssize_t n = send(sock, chunk.data(), std::min(chunk.size(), limit - sent), MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    pollfd writable{sock, POLLOUT, 0};
    if (n == 0 || errno != EAGAIN || poll(&writable, 1, 200) <= 0) break;
  }
  fcntl(sock, F_SETFL, flags);
  return sent;
}

std::string read_until_close(int sock) {
  std::string all;
  char chunk[65536];
  ssize_t n = 0;
  while ((n = recv(sock, chunk, sizeof chunk, 0)) > 0) all.append(chunk, static_cast<size_t>(n));
  // A server that closes with our bytes still unread makes its kernel send a reset instead of
  // an end of stream; the bytes it sent before are still delivered first.
  if (n < 0 && errno != ECONNRESET) throw std::system_error(errno, std::generic_category(), "recv");
  return all;
}

bool readable_within(int sock, std::chrono::milliseconds timeout) {
  pollfd ready{sock, POLLIN, 0};
  return poll(&ready, 1, static_cast<int>(timeout.count())) > 0;
}

int thread_count(pid_t pid) { return static_cast<int>(proc_status_field(pid, "Threads:")); }
long peak_rss_kib(pid_t pid) { return proc_status_field(pid, "VmHWM:"); }
double cpu_seconds(pid_t pid) { return proc_cpu_seconds(pid); }

int fd_count(pid_t pid) {
  const std::filesystem::directory_iterator fds("/proc/" + std::to_string(pid) + "/fd");
  return static_cast<int>(std::distance(begin(fds), end(fds)));
}

int fd_count_settled(pid_t pid, int expected, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int count = fd_count(pid);
  while (count != expected && std::chrono::steady_clock::now() < deadline) {
    usleep(1000);
    count = fd_count(pid);
  }
  return count;
}

std::vector<pid_t> processes_with(const std::string& marker) {
  std::vector<pid_t> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    pid_t pid = 0;
    const std::string name = entry.path().filename();
    std::from_chars(name.data(), name.data() + name.size(), pid);
    if (pid <= 0) continue;
    std::string cmdline = read_file(entry.path() / "cmdline");
    std::ranges::replace(cmdline, '\0', ' ');
    if (cmdline.find(marker) != std::string::npos) found.push_back(pid);
  }
  return found;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> result;
  std::size_t start = 0;
  for (std::size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    result.push_back(text.substr(start, end - start));
  }
  return result;
}

std::optional<std::string> last_line(const std::string& text) {
  std::vector<std::string> all = lines(text);
  if (all.empty()) return std::nullopt;
  return all.back();
}

const std::vector<std::string>& all_servers() {
  static const std::vector<std::string> servers = [] {
    std::istringstream words(SERVERS);
    return std::vector<std::string>(std::istream_iterator<std::string>(words), {});
  }();
  return servers;
}

std::string server_name(const testing::TestParamInfo<std::string>& info) { return info.param; }

std::vector<std::string> wait_for_lines(const Child& child, const std::regex& pattern,
                                        std::size_t count, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<std::string> matching;
    for (std::string& line : lines(child.out())) {
      if (std::regex_search(line, pattern)) matching.push_back(std::move(line));
    }
    if (matching.size() >= count || std::chrono::steady_clock::now() >= deadline) return matching;
    usleep(5000);
  }
}
