#include "qs/ckpt/core/byte_size.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <string>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

struct ByteUnit {
  std::string_view suffix;  // compared case-insensitively
  std::uint64_t bytes;
};
// Decimal units mean what huggingface_hub's max_shard_size means ("5GB" = 5·10⁹).
constexpr ByteUnit kByteUnits[] = {
    {"", 1},
    {"b", 1},
    {"kb", 1'000},
    {"mb", 1'000'000},
    {"gb", 1'000'000'000},
    {"tb", 1'000'000'000'000},
    {"kib", 1ull << 10},
    {"mib", 1ull << 20},
    {"gib", 1ull << 30},
    {"tib", 1ull << 40},
};

}  // namespace

std::uint64_t parse_byte_size(std::string_view text) {
  auto fail = [&]() -> std::uint64_t {
    throw_bad_input(
        "size.invalid",
        fmt::format("cannot read size '{}' (examples: 5GB, 500MB, 2GiB, 1048576)", text));
  };
  std::size_t number_end = 0;
  while (number_end < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[number_end])) || text[number_end] == '.'))
    ++number_end;
  double number = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + number_end, number);
  if (number_end == 0 || error != std::errc() || end != text.data() + number_end) return fail();
  std::string unit;
  for (char c : text.substr(number_end))
    if (!std::isspace(static_cast<unsigned char>(c)))
      unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& candidate : kByteUnits) {
    if (candidate.suffix != unit) continue;
    double bytes = std::round(number * static_cast<double>(candidate.bytes));
    if (!(bytes >= 1 && bytes < 9.0e18)) return fail();
    return static_cast<std::uint64_t>(bytes);
  }
  return fail();
}

}  // namespace qs
