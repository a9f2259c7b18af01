// server_threads: the lab's second pattern. A pool of threads each blocks in its own accept on
// the one listener; the kernel hands each new client to a waiting thread.
#include <system_error>
#include <thread>
#include <vector>

#include "common/server.hpp"

int main(int argc, char* argv[]) try {
  const ServerOptions options = parse_server_options(argc, argv, "server_threads", {.threads = 4});
  stop_on_signals();  // first: a signal the moment it listens must stop it cleanly
  const Fd listener = get_server_socket(options.host, options.port);  // stages 1-2

  std::vector<std::jthread> pool;
  try {
    for (unsigned i = 0; i < options.threads; ++i) {
      pool.emplace_back(setup_connections, listener.get(), std::cref(options));  // stages 3-6
    }
  } catch (const std::system_error&) {
    request_stop();  // the system refused a thread: stop those started, or joining them hangs
    throw;
  }
  pool.clear();  // joins every thread: each returns once SIGINT or SIGTERM stops it

  log_line("Shutting down");
  return 0;
} catch (const std::exception& error) {
  return fail(error);
}
