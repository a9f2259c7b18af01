#pragma once

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "common/protocol.hpp"

using namespace std::chrono_literals;

// Under the sanitizers a server is another program: ThreadSanitizer starts a thread of its own
// in every program that starts a second thread, and both it and AddressSanitizer add shadow
// memory to every byte the server touches. Bounds on threads and memory allow for that.
#if defined(__has_feature)
#define SPHINX_TSAN __has_feature(thread_sanitizer)
#define SPHINX_ASAN __has_feature(address_sanitizer)
#else
#define SPHINX_TSAN 0
#define SPHINX_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__) || SPHINX_TSAN
inline constexpr bool under_thread_sanitizer = true;
#else
inline constexpr bool under_thread_sanitizer = false;
#endif
#if defined(__SANITIZE_ADDRESS__) || SPHINX_ASAN
inline constexpr bool under_address_sanitizer = true;
#else
inline constexpr bool under_address_sanitizer = false;
#endif
inline constexpr int sanitizer_threads = under_thread_sanitizer ? 1 : 0;
inline constexpr long sanitizer_memory_factor =
    under_thread_sanitizer || under_address_sanitizer ? 4 : 1;

// How long a test waits for what a correct server does at once (a reply, a close, a log line):
// ample on a loaded 2-core machine, and short, so that a server that never does it fails its
// test in seconds rather than holding up the suite (longer under the sanitizers' slowdown).
inline constexpr std::chrono::seconds patience =
    under_thread_sanitizer || under_address_sanitizer ? 10s : 3s;

// A program from bin/ (or at an absolute path) run as a child process with its stdout and stderr on
// pipes, which a thread drains as the child writes (a chatty child never blocks on a full pipe).
// Every wait has a timeout, and the destructor kills and reaps the child: a test can fail, but it
// cannot hang or leave a process behind.
class Child {
 public:
  // `max_files`: the child's open-file limit, soft and hard (0: inherit the test's).
  Child(const std::string& program, const std::vector<std::string>& args, rlim_t max_files = 0);
  virtual ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line of stdout, without its '\n'; nullopt if none came within the timeout or the
  // child closed its stdout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = patience);
  // Waits for the child to exit: its exit code (128 + N for signal N), or nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout = 10s);
  // Whether a wait_exit has timed out (the test has failed on it: no need to wait again).
  [[nodiscard]] bool waited_in_vain() const { return waited_in_vain_; }
  void send_signal(int signal) const;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool exited() const { return status_.has_value(); }
  [[nodiscard]] std::string out() const;  // all of stdout so far
  [[nodiscard]] std::string err() const;  // all of stderr so far

 private:
  void drain_pipes(Fd out, Fd err);  // the reader thread
  pid_t pid_ = -1;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string out_;
  std::string err_;
  bool pipes_closed_ = false;
  std::size_t out_read_ = 0;  // how much of out_ read_line has returned
  std::optional<int> status_;
  bool waited_in_vain_ = false;
  std::jthread reader_;  // declared last: destroyed (joined) first
};

// How long a server may take to exit after SIGTERM. A server that does not stop fails its test
// in about this long, instead of making the suite wait on it. Under the sanitizers, which slow
// every thread's exit and check for leaks at the end, as long as before: 5 s was once too
// short for server_threads under TSan on a loaded machine.
inline constexpr std::chrono::milliseconds stop_timeout =
    under_thread_sanitizer || under_address_sanitizer ? 10s : 2s;

// A server from bin/ listening on 127.0.0.1 and a port the kernel chose (port 0). Unless the
// test ended it, the destructor stops it with SIGTERM and checks that it shut down cleanly
// within stop_timeout: exit code 0, nothing on stderr (where sanitizers report). Every test
// checks that much. server_epoll gets the words of SERVER_ARGS (the environment) after its
// options: `make test SERVER_ARGS='--workers 2'` runs every test of it that way.
class Server : public Child {
 public:
  Server(const std::string& program, const std::vector<std::string>& options = {},
         rlim_t max_files = 0);
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  std::string program;
  std::string port;
};

// SERVER_ARGS, split into words (empty when unset). Two tests skip when they are given, as
// --workers changes on purpose what they check: ServerEpoll.OneThreadServesAThousandClients-
// AtOnce counts one thread, and EveryServer.OutOfDescriptorsItWaitsWithoutSpinningAndRecovers
// serves the waiting clients in the order they came (each listener has a backlog of its own).
// AllServers.APortInUseIsARuntimeFailure still holds: its second server does not get them, and
// a server that did not ask to share a port is refused one in use, SO_REUSEPORT or not.
const std::vector<std::string>& server_args();
inline constexpr const char* server_args_skip = "SERVER_ARGS given";

// Every socket a test reads or writes gives up after `timeout` (SO_RCVTIMEO and SO_SNDTIMEO: the
// call fails with EAGAIN), so a server or helper that breaks a bound fails the test in seconds
// instead of hanging the suite.
void set_timeouts(int sock, std::chrono::seconds timeout = patience);
// A connected socket with those timeouts.
Fd connect_port(const std::string& port);
// The next connection to a fake server played by the test, with those timeouts; throws if none
// comes within the timeout.
Fd accept_within(int listener, std::chrono::milliseconds timeout = patience);
// What a test has received from a server and not used yet. The harness frames replies itself
// rather than with common/'s Framer, so a bug in the code under test cannot hide in the tests.
struct ReplyBuffer {
  std::string pending;
};
// The reply to `question` (the question, a space, a stock reply), compared as its bytes arrive:
// returns as soon as it is whole, or as soon as it differs from every right reply (then what
// came, so the test fails at once and shows it). nullopt if the server closed before a byte of
// it came; throws if nothing more came within the socket's timeout.
std::optional<std::string> read_reply(int sock, ReplyBuffer& buffer, std::string_view question);
// ThreadSanitizer (gcc 12's runtime here) runs a signal handler at once only while the thread is
// in a call it treats as blocking (poll, epoll_wait); otherwise it holds the signal until the
// thread's next intercepted call returns. recv and accept4 are not such calls: a SIGTERM that
// reaches a thread just before it blocks in one waits until a client connects or sends
// (google/sanitizers#1813, llvm/llvm-project#83561 describe the same deferral). That is every
// server whose main thread accepts (server_simple, and exercise 1's server_thread_per_client);
// server_threads' main thread waits in a join and server_epoll's in epoll_wait. Plain and ASan
// builds run the signal tests; under TSan they skip those servers, and Server's destructor sends
// them a second SIGTERM if they have not exited 2 s after the first.
bool tsan_cannot_signal(const std::string& server);
// Sends `question` and returns read_reply's reply, or "<closed>".
std::string ask(int sock, ReplyBuffer& buffer, std::string_view question);
// Reads until `expected` has come whole, comparing as bytes arrive: at the first byte that
// differs, or the peer's close, or the socket's timeout, it stops. Returns "" when all came,
// else what a test prints: what was expected and what came.
std::string receive_expected(int sock, std::string_view expected);
bool starts_with(const std::optional<std::string>& line, std::string_view prefix);
// Sends `byte` over and over without blocking, until `limit` bytes are out or the peer has taken
// nothing for 200 ms (it has stopped reading). Returns how many bytes went out.
std::size_t flood(int sock, char byte, std::size_t limit);
// Everything the peer sends until it closes (an end of stream or a reset).
std::string read_until_close(int sock);
// Whether `sock` has something to read (data or end of stream) within the timeout.
bool readable_within(int sock, std::chrono::milliseconds timeout);
// /proc/PID/status and /proc/PID/fd of a child.
int thread_count(pid_t pid);
long peak_rss_kib(pid_t pid);   // VmHWM: what a burst cost, even once it is freed again
double cpu_seconds(pid_t pid);  // user + system time so far
int fd_count(pid_t pid);
// The child's descriptor count once it reaches `expected`, or what it is after the timeout. A
// server logs a connection's end just before it closes the descriptor, so no printed line marks
// the close itself: this is the one place a test waits on a condition rather than on output.
int fd_count_settled(pid_t pid, int expected, std::chrono::milliseconds timeout = 2s);
// The processes whose command line holds `marker`: a test that starts programs which may leave
// strays marks them, since other test suites run on the same machine.
std::vector<pid_t> processes_with(const std::string& marker);
// A whole file as text; empty if it cannot be read.
std::string read_file(const std::string& path);
// Lines of text, without their '\n'.
std::vector<std::string> lines(const std::string& text);
// The last of them, or nullopt if there is none (so a test compares instead of crashing).
std::optional<std::string> last_line(const std::string& text);

// The servers every shared test runs against (AllServers, EveryServer): SERVERS in the Makefile,
// so a new server joins them all by one word there. Tests are named by server, e.g.
// Servers/AllServers.SeedGivesTheSameTranscript/server_epoll.
const std::vector<std::string>& all_servers();
std::string server_name(const testing::TestParamInfo<std::string>& info);
// The lines of the child's stdout that match `pattern` (std::regex_search), once there are
// `count` of them or the timeout has passed: a test that counts log lines waits for the server
// to have printed them instead of reading what is there too early.
std::vector<std::string> wait_for_lines(const Child& child, const std::regex& pattern,
                                        std::size_t count,
                                        std::chrono::milliseconds timeout = patience);
