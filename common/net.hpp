#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.hpp"

// "127.0.0.1:51234" or "[::1]:51234": how every log line names an endpoint.
std::string format_address(const sockaddr* address);
std::string format_address(std::string_view host, std::string_view port);
std::string local_address(int sock);

// Stages 1-2: the listening socket at HOST:PORT (a name, an IPv4 or an IPv6 literal; port 0
// lets the kernel choose). Prints "Listening for incoming connections at ..." with the real port.
// Also the start-up every server shares: SIGPIPE ignored, open-file limit raised to the hard limit.
Fd get_server_socket(const std::string& host, const std::string& port);
// The same for `count` event loops on one port (count listeners, one per loop): with SO_REUSEPORT
// when count > 1, so that they share the port and the kernel spreads new clients over them.
// Prints the one "Listening" line once all of them listen. A server that did not ask to share
// (get_server_socket) is still refused a port in use ("Address already in use"), instead of
// silently taking half the clients of the server already there.
std::vector<Fd> get_server_sockets(const std::string& host, const std::string& port,
                                   unsigned count);

// The client's side of stage 2: a connected socket, or std::system_error naming HOST:PORT.
Fd connect_to(const std::string& host, const std::string& port);

// send() until every byte is out. MSG_NOSIGNAL: a peer that has gone away is an error to
// report (EPIPE), never a SIGPIPE that kills the program.
void send_all(int sock, std::string_view data);

// A close the server decides on (the question limit, a question too long) may come while the
// client's next bytes are still unread, and closing a socket with bytes unread makes the kernel
// send a reset, which throws away the replies still queued to send. So the server lingers as
// nginx does: it sends its end of stream (shutdown SHUT_WR), then reads and discards what the
// client still sends, until the client's end of stream, LINGER_TIME or LINGER_BYTES, and only
// then closes.
inline constexpr std::chrono::milliseconds LINGER_TIME{2000};
inline constexpr std::size_t LINGER_BYTES = std::size_t{1024} * 1024;
// The lingering of a blocking socket; the caller closes it afterwards.
void linger_before_close(int sock);

// A server holds one descriptor per client, so it takes every descriptor it is allowed.
void raise_fd_limit();
