// server_simple: the lab's first pattern. One thread serves one client at a time; the next
// client waits in the listen backlog until the current one leaves.
#include "common/server.hpp"

int main(int argc, char* argv[]) try {
  const ServerOptions options = parse_server_options(argc, argv, "server_simple", {});
  stop_on_signals();  // first: a signal the moment it listens must stop it cleanly
  const Fd listener = get_server_socket(options.host, options.port);  // stages 1-2

  setup_connections(listener.get(), options);  // stages 3-6, until SIGINT or SIGTERM

  log_line("Shutting down");
  return 0;
} catch (const std::exception& error) {
  return fail(error);
}
