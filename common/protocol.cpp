#include "common/protocol.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <vector>

std::mt19937 make_generator(std::optional<std::uint32_t> seed) {
  return std::mt19937(seed ? *seed : std::random_device{}());
}

void make_reply(std::string_view question, std::mt19937& gen, std::string& out) {
  out.append(question).append(" ").append(replies[gen() % replies.size()]);
}

ReplySequence::ReplySequence(std::optional<std::uint32_t> seed) : seed_(seed) {
  if (!seed) return;
  // One table per seed, made by the first connection and kept: a server has one seed.
  static std::mutex mutex;
  static std::map<std::uint32_t, std::vector<std::uint8_t>> tables;
  const std::scoped_lock lock(mutex);
  std::vector<std::uint8_t>& table = tables[*seed];
  if (table.empty()) {
    std::mt19937 gen = make_generator(seed);
    for (std::size_t k = 0; k < SHARED_REPLIES; ++k) table.push_back(gen() % replies.size());
  }
  shared_ = table.data();
}

std::string_view ReplySequence::next() {
  if (!seed_) {
    thread_local std::mt19937 gen = make_generator(std::nullopt);
    return replies[gen() % replies.size()];
  }
  if (position_ < SHARED_REPLIES) return replies[shared_[position_++]];
  if (!own_) {
    own_ = std::make_unique<std::mt19937>(make_generator(seed_));
    own_->discard(SHARED_REPLIES);
  }
  return replies[(*own_)() % replies.size()];
}

void make_reply(std::string_view question, ReplySequence& sequence, std::string& out) {
  out.append(question).append(" ").append(sequence.next());
}

void Framer::append(std::string_view bytes) {
  buffer_.erase(0, start_);  // drop the messages already returned; keeps the capacity
  start_ = 0;
  buffer_.append(bytes);
}

void Framer::shrink(std::size_t keep) {
  if (buffer_.capacity() <= keep) return;
  std::string(pending()).swap(buffer_);  // a move assignment would keep the old capacity
  start_ = 0;
}

std::optional<std::string_view> Framer::next(char delimiter, std::size_t from) {
  const std::string_view rest = pending();
  const std::size_t end = rest.find(delimiter, from);
  if (end != std::string_view::npos && end < max_) {
    start_ += end + 1;
    return rest.substr(0, end + 1);
  }
  if (rest.size() >= max_) {
    throw std::length_error(what_ + " longer than " + std::to_string(max_) + " bytes");
  }
  return std::nullopt;
}

std::string escape(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += {'\\', 'x', hex[byte >> 4], hex[byte & 0xf]};
    }
  }
  return out;
}

std::runtime_error closed_mid_message(std::string_view pending) {
  return std::runtime_error("received '" + escape(pending) + "' then socket closed");
}

std::optional<std::string> recv_upto(int sock, Framer& buffer, char delimiter, std::size_t from) {
  while (true) {
    if (const auto message = buffer.next(delimiter, from)) return std::string(*message);
    char chunk[4096];
    const ssize_t received = recv(sock, chunk, sizeof chunk, 0);
    if (received > 0) {
      buffer.append({chunk, static_cast<std::size_t>(received)});
    } else if (received == 0) {
      if (buffer.pending().empty()) return std::nullopt;
      throw closed_mid_message(buffer.pending());
    } else if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "recv");
    }
  }
}
