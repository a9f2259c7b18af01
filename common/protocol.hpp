#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

// The sphinx protocol (docs/PROTOCOL.md): a question ends with '?', a reply is the question, a
// space and one of five stock replies, which ends with '.'.
inline constexpr std::array<std::string_view, 5> replies = {"Yes.", "Very likely.", "Maybe.",
                                                            "Not likely.", "No."};
inline constexpr std::array<std::string_view, 3> questions = {
    "Will I be happy tomorrow?", "Is general artificial intelligence possible?",
    "Is there true free will?"};

// A question is at most this many bytes, counting its '?'; a reply adds at most 13 more.
inline constexpr std::size_t MAX_QUESTION = 4096;
inline constexpr std::size_t MAX_REPLY = MAX_QUESTION + 1 + 12;

// A generator seeded with --seed N, or from std::random_device.
std::mt19937 make_generator(std::optional<std::uint32_t> seed);

// Appends the question, a space and replies[gen() % 5] to `out`. (The raw engine output is
// fixed by the standard; a distribution is not, so none is used.)
void make_reply(std::string_view question, std::mt19937& gen, std::string& out);

// The replies of one connection. With --seed N the k-th is replies[x_k % 5], x_k the k-th output
// of make_generator(N), on every connection: the first SHARED_REPLIES are computed once and
// shared (one byte each), so a connection keeps only how far it has got; one that goes further
// gets a generator of its own, advanced there with discard. Without a seed, replies are random:
// one generator per thread.
inline constexpr std::size_t SHARED_REPLIES = std::size_t{64} * 1024;
class ReplySequence {
 public:
  explicit ReplySequence(std::optional<std::uint32_t> seed);
  std::string_view next();

 private:
  std::optional<std::uint32_t> seed_;
  const std::uint8_t* shared_ = nullptr;  // the seed's reply indices
  std::uint64_t position_ = 0;            // how many replies this connection has had
  std::unique_ptr<std::mt19937> own_;     // past the shared ones
};

// Stage 5: appends the question, a space and the connection's next reply to `out`.
void make_reply(std::string_view question, ReplySequence& sequence, std::string& out);

// The buffer behind recv_upto: bytes go in as they arrive, whole messages come out. A message
// is everything up to and including its delimiter; the bytes after it stay for the next one, so
// several questions in one recv are never glued together or lost.
class Framer {
 public:
  Framer(std::size_t max, std::string_view what) : max_(max), what_(what) {}

  void append(std::string_view bytes);

  // The next whole message, or nullopt until more bytes arrive. Only a delimiter at index
  // `from` or later ends it (a client skips the echo of its own question, which may hold a
  // '.'). The view lasts until the next append. Throws std::length_error once `max` bytes have
  // arrived without a delimiter: nothing is ever buffered without bound.
  std::optional<std::string_view> next(char delimiter, std::size_t from = 0);

  // Gives back what the buffer grew to past `keep` bytes (a burst's peak), keeping what is
  // pending.
  void shrink(std::size_t keep);

  // The memory its buffer holds.
  [[nodiscard]] std::size_t capacity() const { return buffer_.capacity(); }

  // Bytes received but not yet returned as a message.
  [[nodiscard]] std::string_view pending() const {
    return std::string_view(buffer_).substr(start_);
  }

 private:
  std::size_t max_;
  std::string what_;
  std::string buffer_;
  std::size_t start_ = 0;  // messages before this index have been returned
};

// Received bytes as they may appear in a log line: printable ASCII as it is, a backslash as
// "\\", anything else as "\xHH", so a client cannot put control bytes on the server's terminal.
std::string escape(std::string_view bytes);

// The error for a peer that closed with a message half sent: "received '...' then socket closed".
std::runtime_error closed_mid_message(std::string_view pending);

// Stage 6: receive until `delimiter` (the lab's recv_upto). Returns nullopt if the peer closed
// cleanly between messages; throws if it closed mid-message, on a socket error or on a message
// longer than the framer's maximum.
std::optional<std::string> recv_upto(int sock, Framer& buffer, char delimiter,
                                     std::size_t from = 0);
