// How grade keeps the programs it grades contained. A grading script runs grade once per student
// (`grade ... 2>&1 | tee report`); a student's server that forks, daemonizes or ignores SIGTERM
// must neither hang that pipeline nor leave a process that changes the next student's results.
#include "grade/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <system_error>

#include "common/log.hpp"
#include "grade/grade.hpp"

extern char** environ;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
// A program's stderr shown per start: a traceback fits; a flood does not reach grade's caller.
constexpr std::size_t stderr_shown = std::size_t{64} * 1024;
// A client's stdout kept for the checks: far more than its replies, far less than a loop that
// prints forever fills in memory.
constexpr std::size_t stdout_kept = std::size_t{1024} * 1024;
// How often the watcher looks at the program's memory and the deadline.
constexpr int watch_every_ms = 50;

// Held while grade starts a program, and taken for good when grade is interrupted: no program
// starts between the last kill and grade's exit.
std::mutex starting;

// A small file of /proc, read with a descriptor of grade's that no program started meanwhile
// inherits (O_CLOEXEC: the watcher reads while the main thread may be starting a program).
std::string read_proc(const std::string& path) {
  const Fd file(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  char text[1024];
  const ssize_t n = file ? read(file.get(), text, sizeof text - 1) : -1;
  return n > 0 ? std::string(text, static_cast<std::size_t>(n)) : "";
}

// The number at the start of `text`, or nullopt.
template <typename Number>
std::optional<Number> number_in(std::string_view text) {
  Number number{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error != std::errc{} || end == text.data()) return std::nullopt;
  return number;
}

struct Task {
  pid_t parent;
  bool zombie;
};

// Every process on the machine, read from /proc/PID/stat: its parent and whether it has exited.
std::map<pid_t, Task> all_processes() {
  std::map<pid_t, Task> tasks;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return tasks;
  while (const dirent* entry = readdir(proc)) {
    const pid_t pid = number_in<pid_t>(entry->d_name).value_or(0);
    if (pid <= 0) continue;
    const std::string stat = read_proc("/proc/" + std::to_string(pid) + "/stat");
    // "PID (COMMAND) STATE PPID ...": the command may hold spaces and parentheses.
    const std::size_t after = stat.rfind(") ");
    if (after == std::string::npos) continue;
    const std::optional<pid_t> parent = number_in<pid_t>(std::string_view(stat).substr(after + 4));
    if (!parent) continue;
    tasks[pid] = {*parent, stat[after + 2] == 'Z'};
  }
  closedir(proc);
  return tasks;
}

// grade's descendants, found by parent links rather than by session or process group, which a
// program can leave (setsid, setpgid). As the subreaper, grade inherits every orphan among them,
// so the links never lead past it to init.
std::vector<pid_t> descendants(bool living_only) {
  const std::map<pid_t, Task> tasks = all_processes();
  std::vector<pid_t> found;
  std::vector<pid_t> parents = {getpid()};
  while (!parents.empty()) {
    const pid_t parent = parents.back();
    parents.pop_back();
    for (const auto& [pid, task] : tasks) {
      if (task.parent != parent) continue;
      parents.push_back(pid);
      if (!living_only || !task.zombie) found.push_back(pid);
    }
  }
  return found;
}

void kill_all(const std::vector<pid_t>& pids) {
  for (const pid_t pid : pids) kill(pid, SIGKILL);
}

// The resident memory of all of grade's descendants together, in bytes.
std::size_t resident_bytes() {
  static const long page = sysconf(_SC_PAGESIZE);
  std::size_t total = 0;
  for (const pid_t pid : descendants(true)) {
    // "SIZE RESIDENT ...", in pages
    const std::string statm = read_proc("/proc/" + std::to_string(pid) + "/statm");
    const std::size_t space = statm.find(' ');
    if (space == std::string::npos) continue;
    total += number_in<std::size_t>(std::string_view(statm).substr(space + 1)).value_or(0) *
             static_cast<std::size_t>(page);
  }
  return total;
}

// Onto grade's own stderr, as much as it takes.
void write_all(std::string_view text) {
  for (std::size_t at = 0; at < text.size();) {
    const ssize_t n = write(STDERR_FILENO, text.data() + at, text.size() - at);
    if (n <= 0) return;  // grade's own stderr is gone: nothing to show it on
    at += static_cast<std::size_t>(n);
  }
}

// SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken here: grade kills its programs
// before it exits, or they would outlive it (as orphans of init, holding its caller's pipe).
void take_signals(sigset_t signals) {
  int number = 0;
  while (sigwait(&signals, &number) != 0) {
  }
  starting.lock();  // held until the exit: nothing starts any more
  kill_descendants();
  log_error("stopped by signal " + std::to_string(number) + " (" + strsignal(number) + ")");
  std::_Exit(2);
}
}  // namespace

void contain_programs() {
  // A child subreaper inherits the orphans among its descendants: what a program forks and
  // leaves, daemons included (double fork, setsid), stays grade's to find and kill.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    throw std::system_error(errno, std::generic_category(), "prctl(PR_SET_CHILD_SUBREAPER)");
  }
  sigset_t signals;
  sigemptyset(&signals);
  for (const int number : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, number);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread(take_signals, signals).detach();  // it ends with grade
}

void kill_descendants() {
  // A dying process can still fork, and a killed parent's children come to grade: look again
  // until a look finds none. Bounded, for a process stuck in the kernel (state D).
  const auto give_up = Clock::now() + 5s;
  for (std::vector<pid_t> found = descendants(false); !found.empty(); found = descendants(false)) {
    kill_all(found);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (Clock::now() > give_up) {
      log_error("could not kill " + std::to_string(found.size()) + " processes of the program");
      return;
    }
    std::this_thread::sleep_for(1ms);  // for SIGKILL to take them, rather than spin
  }
}

Process::Process(std::string role, const std::vector<std::string>& argv, Stdout out,
                 const Limits& limits)
    : role_(std::move(role)) {
  // The program's stderr goes through a pipe grade reads, never to grade's own stderr: a process
  // holding that would keep a grading script's pipe open after grade exits. Its stdout, when
  // kept, through another, read as the program writes: never all of it in memory.
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  stderr_.reset(ends[0]);
  const Fd write_end(ends[1]);
  Fd stdout_write_end;
  if (out == Stdout::keep) {
    if (pipe2(ends, O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe");
    }
    stdout_.reset(ends[0]);
    stdout_write_end.reset(ends[1]);
  }

  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (out == Stdout::keep) {
    posix_spawn_file_actions_adddup2(&actions, stdout_write_end.get(), STDOUT_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDERR_FILENO);
  // A session of its own: a Ctrl-C on grade's terminal reaches grade alone, which then stops the
  // program as a whole. The program gets the signal mask and dispositions a shell would give it,
  // not grade's (signals blocked for take_signals, SIGPIPE ignored).
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigset_t defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (const int number : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, number);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int error = 0;
  {
    const std::scoped_lock lock(starting);
    // posix_spawnp searches PATH like a shell, and reports a program that cannot run (ENOENT,
    // EACCES) as its result, not as an exit status of 127 that could be the program's own.
    error = posix_spawnp(&pid_, args[0], &actions, &attributes, args.data(), environ);
  }
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    throw CannotGrade("cannot start " + quote(argv[0]) + ": " + std::strerror(error));
  }
  watcher_ = std::thread(&Process::watch, this, limits);
}

Process::~Process() { stop(); }

void Process::stop() {
  if (stopping_.exchange(true)) return;
  if (!status_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    status_ = status;
  }
  kill_descendants();
  watcher_.join();
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!status_) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = status;
    } else if (Clock::now() >= deadline) {
      break;
    } else {
      std::this_thread::sleep_for(5ms);  // a bounded wait for an exit
    }
  }
  return status_;
}

void Process::terminate() {
  for (const pid_t pid : descendants(true)) {
    if (terminated_.insert(pid).second) kill(pid, SIGTERM);
  }
}

bool Process::gone_within(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  // Zombies count until grade reaps them, here, before each look: a chain of processes that each
  // fork and exit at once slips between the entries of /proc of a look for the living alone, but
  // never past one that also sees the exited, whom only grade takes away.
  while (true) {
    if (wait(0ms)) {
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
    if (descendants(false).empty()) return true;
    if (Clock::now() >= deadline) return false;
    if (!terminated_.empty()) terminate();
    std::this_thread::sleep_for(20ms);
  }
}

std::optional<std::string> Process::stopped_why() const {
  const std::scoped_lock lock(mutex_);
  return why_;
}

void Process::stopped_by_grade(const std::string& why) {
  {
    const std::scoped_lock lock(mutex_);
    if (why_) return;
    why_ = why;
  }
  kill_all(descendants(false));  // the main thread sees the exit and reaps
}

// The watcher thread: passes on the program's stderr, capped, and stops the program when it uses
// more memory than allowed or the time limit runs out. It keeps reading past the cap, so that the
// program never blocks on a full pipe.
void Process::watch(const Limits& limits) {
  char chunk[65536];
  std::array<pollfd, 2> ready = {
      {{.fd = stderr_.get(), .events = POLLIN, .revents = 0},
       {.fd = stdout_ ? stdout_.get() : -1, .events = POLLIN, .revents = 0}}};
  while (!stopping_) {
    if (poll(ready.data(), ready.size(), watch_every_ms) > 0) {
      for (pollfd& each : ready) {
        if (each.revents == 0) continue;
        const ssize_t n = read(each.fd, chunk, sizeof chunk);
        if (n > 0) take(each.fd, chunk, static_cast<std::size_t>(n));
        if (n == 0) each.fd = -1;  // every writer is gone: poll just waits from now on
      }
    }
    if (limits.max_memory_mib &&
        resident_bytes() > std::size_t{*limits.max_memory_mib} * 1024 * 1024) {
      stopped_by_grade("the " + role_ + " used more than " +
                       std::to_string(*limits.max_memory_mib) + " MiB");
    }
    if (Clock::now() >= limits.deadline) stopped_by_grade(time_ran_out);
  }
  // The program is gone (stop): what it wrote last is still in the pipes.
  for (const Fd* pipe : {&stderr_, &stdout_}) {
    if (!*pipe) continue;
    fcntl(pipe->get(), F_SETFL, O_NONBLOCK);
    for (ssize_t n = 0; (n = read(pipe->get(), chunk, sizeof chunk)) > 0;) {
      take(pipe->get(), chunk, static_cast<std::size_t>(n));
    }
  }
  if (!unfinished_.empty()) write_all(unfinished_ + "\n");  // its last line, ended by grade
  if (not_shown_ > 0) {
    log_error(std::to_string(not_shown_) + " more bytes of the " + role_ + "'s stderr not shown");
  }
}

void Process::take(int fd, const char* bytes, std::size_t count) {
  if (fd == stderr_.get()) {
    forward(bytes, count);
  } else {
    printed_.append(bytes, std::min(count, stdout_kept - printed_.size()));
  }
}

// Whole lines only: with `grade ... 2>&1 | tee report`, a line the program left unfinished would
// otherwise run into grade's next report line ("Warning: ...PASS answers-the-three-questions").
void Process::forward(const char* bytes, std::size_t count) {
  const std::size_t shown = std::min(count, stderr_shown - shown_);
  unfinished_.append(bytes, shown);
  const std::size_t end = unfinished_.rfind('\n');
  if (end != std::string::npos) {
    write_all(unfinished_.substr(0, end + 1));
    unfinished_.erase(0, end + 1);
  }
  shown_ += shown;
  not_shown_ += count - shown;
}
