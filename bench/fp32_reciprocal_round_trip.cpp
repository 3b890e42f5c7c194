// Does an NVFP4 global scale survive modelopt → compressed-tensors → modelopt? The conversion
// (libquant nvfp4_layout_conversion) stores 1/x and the way back 1/(1/x), each an fp32
// division rounded to nearest. This counts, over every positive fp32 whose reciprocal is a
// normal number (the scales the conversion accepts), how often 1/(1/x) != x and by how many
// ulps: for normal x, for the subnormal x whose reciprocal is still finite, within
// [2^-30, 2^30] (where real weight and activation scales lie), and per binade. For normal x
// and a normal reciprocal the outcome depends on the mantissa alone (x = m·2^e gives
// 1/x = (1/m)·2^-e, rounded the same way for every e), so every binade should count the same
// as [1, 2); tests/test_nvfp4_layout_conversion.cpp relies on that and checks [1, 2) alone.
// About 2·10^9 pairs of divisions: 2 s of one core.

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>

namespace {

struct RoundTripCount {
  std::uint64_t tested = 0;
  std::uint64_t off = 0;       // 1/(1/x) != x
  std::uint64_t max_ulps = 0;  // largest |bits(1/(1/x)) − bits(x)|

  void print(const char* label) const {
    fmt::print("{:<40} {:>13} floats, 1/(1/x) != x for {:>11} ({:.4f} %), max {} ulp\n", label,
               tested, off, 100.0 * static_cast<double>(off) / static_cast<double>(tested),
               max_ulps);
  }
};

// [first, last) in bit patterns; positive floats order like their bits.
RoundTripCount count_range(std::uint32_t first, std::uint32_t last) {
  RoundTripCount count;
  std::uint32_t max_ulps = 0;
  std::uint64_t off = 0;
  for (std::uint32_t bits = first; bits < last; ++bits) {
    const float x = std::bit_cast<float>(bits);
    const std::uint32_t back = std::bit_cast<std::uint32_t>(1.0f / (1.0f / x));
    const std::uint32_t ulps = back > bits ? back - bits : bits - back;
    off += ulps != 0;
    max_ulps = std::max(max_ulps, ulps);
  }
  count.tested = last - first;
  count.off = off;
  count.max_ulps = max_ulps;
  return count;
}

std::uint32_t bits_of(float value) { return std::bit_cast<std::uint32_t>(value); }

}  // namespace

int main() {
  const auto start = std::chrono::steady_clock::now();
  // The smallest x with a finite reciprocal is just above 1/FLT_MAX (a subnormal); the
  // largest whose reciprocal is still normal is 2^126 (1/2^126 = FLT_MIN).
  std::uint32_t first = bits_of(1.0f / std::numeric_limits<float>::max());
  while (!std::isfinite(1.0f / std::bit_cast<float>(first))) ++first;
  const std::uint32_t smallest_normal = bits_of(std::numeric_limits<float>::min());
  const std::uint32_t last = bits_of(std::ldexp(1.0f, 126)) + 1;

  const auto subnormal = count_range(first, smallest_normal);
  const auto unit_binade = count_range(bits_of(1.0f), bits_of(2.0f));
  RoundTripCount normal;
  int binades_unlike_unit = 0;
  for (int exponent = -126; exponent < 126; ++exponent) {
    const auto binade =
        count_range(bits_of(std::ldexp(1.0f, exponent)), bits_of(std::ldexp(1.0f, exponent + 1)));
    binades_unlike_unit += binade.off != unit_binade.off || binade.max_ulps != unit_binade.max_ulps;
    normal.tested += binade.tested;
    normal.off += binade.off;
    normal.max_ulps = std::max(normal.max_ulps, binade.max_ulps);
  }
  const auto top = count_range(last - 1, last);  // 2^126 itself
  normal.tested += top.tested;
  normal.off += top.off;
  const auto moderate = count_range(bits_of(std::ldexp(1.0f, -30)), bits_of(std::ldexp(1.0f, 30)));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  normal.print("normal x in [2^-126, 2^126]");
  subnormal.print(
      fmt::format("subnormal x in [{:g}, 2^-126)", std::bit_cast<float>(first)).c_str());
  moderate.print("[2^-30, 2^30)");
  unit_binade.print("[1, 2)");
  fmt::print("normal binades counting differently from [1, 2): {} of 252\n", binades_unlike_unit);
  fmt::print("{:.1f} s\n", seconds);
  return 0;
}
