#pragma once
// compressed-tensors' pack_to_int32 layout of b-bit codes (2 ≤ b ≤ 8) in int32 words: ⌊32/b⌋
// values per word, value i of a word in bits [i·b, i·b + b), no value split across two words.
// For 3, 5, 6 and 7 bits each word's top 32 mod b bits are unused, and a stream whose length
// is not a multiple of ⌊32/b⌋ ends in unused fields; the packer writes zeros in both. Our
// writer, our readers and the shape checks all use these two functions, so they cannot drift.

#include <cstdint>

namespace qs {

constexpr int packed_values_per_word(int bits) { return 32 / bits; }

// Words holding `count` b-bit values.
constexpr std::uint64_t packed_words(std::uint64_t count, int bits) {
  const auto per_word = static_cast<std::uint64_t>(packed_values_per_word(bits));
  return (count + per_word - 1) / per_word;
}

}  // namespace qs
