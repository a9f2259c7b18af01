// libFuzzer target for the Framer, the code that cuts questions out of a byte stream. Whatever
// the bytes and however they are split into recv-sized chunks: every question returned ends with
// its only '?', none is longer than the maximum, nothing is buffered past the maximum, and the
// questions followed by the pending bytes are exactly the input.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/protocol.hpp"

namespace {
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max = data[0] % 64 + 1;    // small maxima reach the limit often
  const std::size_t chunk = data[1] % 16 + 1;  // how the stream is split into receives
  const std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);
  Framer framer(max, "question");
  std::string questions;
  std::size_t appended = 0;
  try {
    for (; appended < input.size(); appended += chunk) {
      framer.append(input.substr(appended, chunk));
      while (const std::optional<std::string_view> question = framer.next('?')) {
        check(!question->empty() && question->size() <= max);
        check(question->find('?') == question->size() - 1);
        questions += *question;
      }
      check(framer.pending().size() < max);
      check(questions + std::string(framer.pending()) ==
            input.substr(0, std::min(input.size(), appended + chunk)));
    }
  } catch (const std::length_error&) {
    // Only a run of `max` bytes without a '?' may be refused.
    check(framer.pending().size() >= max);
    check(framer.pending().substr(0, max).find('?') == std::string_view::npos);
  }
  return 0;
}
