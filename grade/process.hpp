#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"

// The programs grade starts are students' code: they fork, daemonize, ignore signals, flood their
// output and eat memory. Everything here keeps them contained (process.cpp says why each step is
// there): nothing they start outlives grade's use of them, and nothing they do hangs grade.

// Call first in main, before any thread starts: grade becomes the subreaper of whatever its
// programs fork, and SIGINT, SIGTERM or SIGHUP to grade kill them all before grade exits 2.
void contain_programs();

// SIGKILL to every descendant of grade, whatever its session or process group, until none is
// left, and every one reaped.
void kill_descendants();

// What grade lets a program use.
struct Limits {
  std::optional<unsigned> max_memory_mib;          // all its processes' RSS together
  std::chrono::steady_clock::time_point deadline;  // of the whole grading
};

// "the time limit ran out": why grade stopped a program at the deadline.
inline const std::string time_ran_out = "the time limit ran out";

// What becomes of a program's stdout: nothing (a server's, which holds ports and times), or kept
// for the checks (a client's lines: the first MiB, the rest read and dropped, as a flood is).
enum class Stdout { discard, keep };

// A program grade started (the server or the client under test, `role` in messages), in a
// session of its own, with stdin from /dev/null, stdout discarded or kept, and stderr through
// grade (64 KiB of it per start). The destructor stops it.
class Process {
 public:
  // CannotGrade if it cannot start.
  Process(std::string role, const std::vector<std::string>& argv, Stdout out, const Limits& limits);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Waits at most `timeout` for the process grade started to exit: its wait status, or nullopt
  // if it still runs.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM to every process of the program: it stops as a whole, as a terminal's session does.
  // From now on, gone_within sends one to every process that appears too (a fork under way).
  void terminate();
  // Whether every process of the program has exited within `timeout`; reaps those that have.
  bool gone_within(std::chrono::milliseconds timeout);
  // Kills and reaps every process of the program, and shows the last of its stderr.
  void stop();
  // What the program printed, with Stdout::keep: all of it once stop has returned.
  [[nodiscard]] const std::string& printed() const { return printed_; }
  // Why grade stopped the program itself: "the server used more than 512 MiB" or time_ran_out.
  [[nodiscard]] std::optional<std::string> stopped_why() const;

 private:
  void watch(const Limits& limits);  // the watcher thread: stderr, memory, deadline
  void take(int fd, const char* bytes, std::size_t count);
  void forward(const char* bytes, std::size_t count);
  void stopped_by_grade(const std::string& why);

  std::string role_;
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::set<pid_t> terminated_;  // the processes sent a SIGTERM
  Fd stderr_;                   // the read end of the program's stderr
  Fd stdout_;                   // and of its stdout, with Stdout::keep
  std::string printed_;
  std::size_t shown_ = 0;
  std::size_t not_shown_ = 0;
  std::string unfinished_;  // shown, but held back until its line ends
  mutable std::mutex mutex_;
  std::optional<std::string> why_;
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};
