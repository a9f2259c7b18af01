#pragma once

#include <random>
#include <string>

#include "common/cli.hpp"
#include "common/fd.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/protocol.hpp"

// What server_simple and server_threads share: the lab's blocking stages 3-5. Each thread runs
// setup_connections on the one listener and serves one client at a time in process_connection.

// SIGINT/SIGTERM stop the blocking servers: the handler shuts the listener down (every accept
// returns) and each thread's current connection (every recv and send returns), so each thread
// leaves setup_connections and main can print "Shutting down". `threads` is how many threads
// serve connections.
void stop_on_signals(int listener, unsigned threads);
void request_stop();  // what the signal handler does, for a server that must stop on its own

// Stage 3: accept connections and hand each to process_connection, until stopped.
void setup_connections(int listener, const ServerOptions& options);

// Stage 4: one conversation, to its end; logs how it ended. A client's error ends its own
// connection, never the server.
void process_connection(Fd sock, const std::string& peer, const ServerOptions& options);

// Stage 5: one question and its reply. False once the client has closed between questions.
bool process_request(int sock, Framer& buffer, std::mt19937& gen);
