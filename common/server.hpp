#pragma once

#include <string>

#include "common/cli.hpp"
#include "common/fd.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

// What server_simple and server_threads share: the lab's blocking stages 3-5. Each thread runs
// setup_connections on the one listener and serves one client at a time in process_connection.

// SIGINT/SIGTERM stop the blocking servers: the handler shuts down every socket a thread may be
// blocked on (the listener in accept, a client in recv or send), so every call returns, each
// thread leaves setup_connections and main can print "Shutting down". Called before the server
// listens: a signal sent the moment "Listening ..." is printed must already stop it cleanly.
// Works for any number of threads, pooled or one per connection.
void stop_on_signals();
void request_stop();  // what the signal handler does, for a server that must stop on its own
// Whether a stop has been requested: an accept loop of a server's own ends once it is true.
bool stop_requested();

// While it lives, a stop shuts `sock` down, so a call blocked on it in this thread returns.
// setup_connections guards its listener with one, process_connection its client; a server with
// an accept loop of its own guards its listener the same way.
struct StopSlot;
class ShutdownOnStop {
 public:
  explicit ShutdownOnStop(int sock);
  ~ShutdownOnStop();
  ShutdownOnStop(const ShutdownOnStop&) = delete;
  ShutdownOnStop& operator=(const ShutdownOnStop&) = delete;

 private:
  StopSlot& slot_;
};

// Stage 3: accept connections and hand each to process_connection, until stopped.
void setup_connections(int listener, const ServerOptions& options);

// Stage 4: one conversation, to its end; logs how it ended. A client's error ends its own
// connection, never the server. A close the server decides on lingers (linger_before_close).
void process_connection(Fd sock, const std::string& peer, const ServerOptions& options);

// Stage 5: one question and its reply. False once the client has closed between questions.
bool process_request(int sock, Framer& buffer, ReplySequence& sequence);
