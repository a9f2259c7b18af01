#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "common/protocol.hpp"

using namespace std::chrono_literals;

// A program from bin/ run as a child process with its stdout and stderr on pipes. Every read
// waits with a timeout, and the destructor kills and reaps the child: a test can fail, but it
// cannot hang or leave a process behind.
class Child {
 public:
  Child(const std::string& program, const std::vector<std::string>& args);
  virtual ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line of stdout, without its '\n'; nullopt if none came within the timeout or the
  // child closed its stdout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = 10s);
  // Reads until the child exits; its exit code, or nullopt (and the child killed) on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout = 10s);
  void send_signal(int signal) const;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& out() const { return out_; }  // all of stdout so far
  [[nodiscard]] const std::string& err() const { return err_; }  // all of stderr so far

 private:
  bool pump(std::chrono::milliseconds timeout);  // reads what is there; false on timeout
  pid_t pid_ = -1;
  Fd out_pipe_;
  Fd err_pipe_;
  std::string out_;
  std::string err_;
  std::size_t out_read_ = 0;  // how much of out_ read_line has returned
  std::optional<int> status_;
};

// A server from bin/ listening on 127.0.0.1 and a port the kernel chose (port 0).
class Server : public Child {
 public:
  Server(const std::string& program, const std::vector<std::string>& options = {});
  std::string port;
};

// A connected socket whose reads give up after 10 s instead of hanging the test.
Fd connect_port(const std::string& port);
// Replies to `question`, read as the client reads them.
std::optional<std::string> read_reply(int sock, Framer& buffer, std::string_view question);
// Sends `question` and returns the reply read as the client reads it, or "<closed>".
std::string ask(int sock, Framer& buffer, std::string_view question);
bool starts_with(const std::optional<std::string>& line, std::string_view prefix);
// Everything the peer sends until it closes (an end of stream or a reset).
std::string read_until_close(int sock);
// Whether `sock` has something to read (data or end of stream) within the timeout.
bool readable_within(int sock, std::chrono::milliseconds timeout);
// /proc/PID/status and /proc/PID/fd of a child.
int thread_count(pid_t pid);
int fd_count(pid_t pid);
// The child's descriptor count once it reaches `expected`, or what it is after the timeout. A
// server logs a connection's end just before it closes the descriptor, so no printed line marks
// the close itself: this is the one place a test waits on a condition rather than on output.
int fd_count_settled(pid_t pid, int expected, std::chrono::milliseconds timeout = 2s);
// Lines of text, without their '\n'.
std::vector<std::string> lines(const std::string& text);
