// async_sync: the lab's Figure 1. "sync" talks to each client in turn, each conversation a
// blocking sleep, so the waits add up; "async" starts every conversation at once as a timer in
// one epoll loop, on one thread, so the waits overlap.
//
//   the lab's asyncio                           here
//   await asyncio.sleep(delay)                  a timerfd armed to fire after `delay`
//   asyncio.ensure_future(async_netio(...))     epoll_ctl(ADD) of that timerfd
//   await client1                               the timerfd becomes readable
//   loop.run_until_complete(async_main())       epoll_wait until every timer has fired
#include <sys/epoll.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <system_error>
#include <thread>
#include <vector>

#include "common/cli.hpp"
#include "common/fd.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"

namespace {
std::string now() {  // the lab's time.strftime('%X')
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  std::array<char, 16> text{};
  std::strftime(text.data(), text.size(), "%H:%M:%S", &local);
  return text.data();
}

std::system_error errno_error(const char* what) { return {errno, std::generic_category(), what}; }

void sync_netio(double delay, const std::string& addr) {
  std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  log_line("talked to " + addr);
}

void sync_main(double delay, unsigned clients) {
  log_line("begin at time " + now());
  for (unsigned k = 1; k <= clients; ++k) sync_netio(delay, "client " + std::to_string(k));
  log_line("end at time " + now());
}

// async_netio(delay, addr) up to its await: a timer that fires once, after `delay`.
Fd start_timer(double delay) {
  Fd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) throw errno_error("timerfd_create");
  const auto nanoseconds = static_cast<long long>(delay * 1e9);
  itimerspec when{};
  when.it_value.tv_sec = static_cast<std::time_t>(nanoseconds / 1'000'000'000);
  when.it_value.tv_nsec = std::max(1LL, nanoseconds % 1'000'000'000);  // all zero would disarm it
  if (timerfd_settime(timer.get(), 0, &when, nullptr) != 0) throw errno_error("timerfd_settime");
  return timer;
}

void async_main(double delay, unsigned clients) {
  const Fd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) throw errno_error("epoll_create1");
  std::vector<Fd> timers;  // timers[k - 1] is client k's conversation
  timers.reserve(clients);
  for (unsigned k = 1; k <= clients; ++k) {
    timers.push_back(start_timer(delay));
    epoll_event event{.events = EPOLLIN, .data = {.u32 = k}};
    if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, timers.back().get(), &event) != 0) {
      throw errno_error("epoll_ctl");
    }
  }
  log_line("begin at time " + now());
  for (unsigned done = 0; done < clients;) {
    std::array<epoll_event, 64> ready{};
    const int count = epoll_wait(epoll.get(), ready.data(), ready.size(), -1);
    if (count < 0 && errno != EINTR) throw errno_error("epoll_wait");
    std::vector<unsigned> fired;
    fired.reserve(static_cast<std::size_t>(std::max(count, 0)));
    for (int i = 0; i < count; ++i) fired.push_back(ready[i].data.u32);
    std::sort(fired.begin(), fired.end());  // timers that fire together finish in client order
    for (const unsigned k : fired) {
      timers[k - 1].reset();  // closing it also takes it out of the epoll set
      log_line("talked to client " + std::to_string(k));
      ++done;
    }
  }
  log_line("end at time " + now());
}

constexpr std::string_view usage =
    "usage: async_sync sync|async [--delay SECONDS] [--clients N]\n"
    "  MODE                  sync: one client after another; async: all at once\n"
    "  --delay SECONDS       seconds each simulated conversation takes (default 3)\n"
    "  --clients N           how many clients to talk to (default 2)\n"
    "  -h, --help            print this help and exit\n";

struct Options {
  std::string mode;
  double delay = 3;
  unsigned clients = 2;
};

std::optional<Options> read_options(int argc, char* argv[]) {
  Options options;
  const std::array<option, 2> long_options = {
      {{"delay", required_argument, nullptr, 'd'}, {"clients", required_argument, nullptr, 'c'}}};
  const auto arguments =
      parse_command_line(argc, argv, "", long_options, [&](int val, const char* value) {
        if (val == 'd') options.delay = parse_seconds(value, "--delay");
        if (val == 'c') {
          options.clients = parse_uint(value, "--clients", 1, 100000,
                                       "each async client is a timer descriptor of its own");
        }
      });
  if (!arguments) return std::nullopt;
  check_arguments(*arguments, {"MODE"}, 1);
  options.mode = (*arguments)[0];
  if (options.mode != "sync" && options.mode != "async") {
    throw UsageError("MODE must be sync or async, not '" + escape(options.mode) + "'");
  }
  return options;
}
}  // namespace

int main(int argc, char* argv[]) try {
  const auto [mode, delay, clients] =
      options_or_exit("async_sync", usage, [&] { return read_options(argc, argv); });

  const auto start = std::chrono::steady_clock::now();
  if (mode == "sync") {
    sync_main(delay, clients);  // about clients x delay
  } else {
    async_main(delay, clients);  // about delay, however many clients
  }
  // The lab's clock reads whole seconds, too coarse for --delay 0.5; stdout stays the lab's.
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::fprintf(stderr, "the run took %.2f s\n", took.count());
  return 0;
} catch (const std::exception& error) {
  return fail(error);
}
