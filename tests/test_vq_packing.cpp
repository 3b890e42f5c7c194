// VQ code packing (LSB-first u32 stream per row, fields straddling words) and decode.

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/quant/vq.h"

namespace qs::vq {
namespace {

std::vector<std::uint32_t> random_codes(std::uint64_t count, std::uint32_t k,
                                        std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::vector<std::uint32_t> codes(count);
  for (auto& code : codes) code = static_cast<std::uint32_t>(generator() % k);
  return codes;
}

// The i-th field of a row read bit by bit: the definition, independent of the packer's loop.
std::uint32_t field_bit_by_bit(const std::int32_t* words, std::uint64_t i, std::uint32_t bits) {
  std::uint32_t value = 0;
  for (std::uint32_t b = 0; b < bits; ++b) {
    const std::uint64_t position = i * bits + b;
    const auto word = static_cast<std::uint32_t>(words[position / 32]);
    value |= ((word >> (position % 32)) & 1u) << b;
  }
  return value;
}

std::string expect_error_kind(auto&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.kind();
  }
  return "no error";
}

TEST(VqPacking, EveryPresetTierRoundTripsAndFollowsTheBitLayout) {
  for (const Tier& tier : preset_vq_tiers()) {
    // A short row whose stream ends inside a word, one scale group, and three groups.
    for (const std::uint64_t cols : {std::uint64_t{tier.d} * 5, std::uint64_t{128},
                                     std::uint64_t{384}}) {
      SCOPED_TRACE(tier.name + " cols " + std::to_string(cols));
      const std::uint64_t rows = 3, per_row = cols / tier.d;
      const auto codes = random_codes(rows * per_row, tier.k, cols * 131 + tier.k);
      const std::uint64_t words = tier.packed_words_per_row(cols);
      std::vector<std::int32_t> packed(rows * words, -1);
      pack_codes(codes, rows, cols, tier, packed);
      const std::uint32_t bits = tier.index_bits();
      for (std::uint64_t row = 0; row < rows; ++row) {
        for (std::uint64_t i = 0; i < per_row; ++i)
          ASSERT_EQ(field_bit_by_bit(packed.data() + row * words, i, bits),
                    codes[row * per_row + i]);
        // Bits past the last field are zero.
        const std::uint64_t used = per_row * bits;
        for (std::uint64_t position = used; position < words * 32; ++position)
          ASSERT_EQ((static_cast<std::uint32_t>(packed[row * words + position / 32]) >>
                     (position % 32)) & 1u,
                    0u);
      }
      std::vector<std::uint32_t> unpacked(codes.size(), 0xDEADu);
      unpack_codes(packed, rows, cols, tier, unpacked);
      EXPECT_EQ(unpacked, codes);
    }
  }
}

TEST(VqPacking, TwelveBitFieldsStraddleWords) {
  const Tier tier = *preset_vq_tier("vq3");  // 12-bit indices
  const std::vector<std::uint32_t> codes = {0xABC, 0x123, 0x456};
  std::vector<std::int32_t> packed(tier.packed_words_per_row(12));
  ASSERT_EQ(packed.size(), 2u);  // 36 bits
  pack_codes(codes, 1, 12, tier, packed);
  EXPECT_EQ(static_cast<std::uint32_t>(packed[0]), 0x56123ABCu);
  EXPECT_EQ(static_cast<std::uint32_t>(packed[1]), 0x4u);
}

TEST(VqPacking, OddWordCountsAndElevenBitFields) {
  const Tier tier{"k2000", 4, 2000, CodebookKind::Learned};  // 11 bits, 32 codes: 11 words
  ASSERT_EQ(tier.packed_words_per_row(128), 11u);
  const auto codes = random_codes(5 * 32, tier.k, 7);
  std::vector<std::int32_t> packed(5 * 11);
  pack_codes(codes, 5, 128, tier, packed);
  std::vector<std::uint32_t> unpacked(codes.size());
  unpack_codes(packed, 5, 128, tier, unpacked);
  EXPECT_EQ(unpacked, codes);
}

TEST(VqPacking, CodesOutOfRangeAreRefused) {
  const Tier tier{"k200", 4, 200, CodebookKind::Learned};  // 8-bit fields can hold 200..255
  std::vector<std::uint32_t> codes(32, 5);
  std::vector<std::int32_t> packed(tier.packed_words_per_row(128));
  pack_codes(codes, 1, 128, tier, packed);
  packed[3] |= 0xC8 << 16;  // field 14 becomes 200 | 5
  std::vector<std::uint32_t> unpacked(32);
  EXPECT_EQ(expect_error_kind([&] { unpack_codes(packed, 1, 128, tier, unpacked); }),
            "vq.code_range");
  codes[9] = 200;
  EXPECT_EQ(expect_error_kind([&] { pack_codes(codes, 1, 128, tier, packed); }),
            "vq.code_range");
}

TEST(VqPacking, TierWidthMustDivideTheColumns) {
  const Tier tier = *preset_vq_tier("vq1");  // d 8
  std::vector<std::uint32_t> codes(2);
  std::vector<std::int32_t> packed(1);
  EXPECT_EQ(expect_error_kind([&] { pack_codes(codes, 1, 12, tier, packed); }), "vq.shape");
}

TEST(VqDecode, CodewordTimesGroupScale) {
  Codebook codebook{Tier{"tiny", 4, 3, CodebookKind::Learned}, DType::F16,
                    {0.5f, -1.0f, 2.0f, 0.0f,  //
                     1.0f, 1.0f, 1.0f, 1.0f,   //
                     -0.25f, 0.75f, -1.5f, 3.0f}};
  VqQuantized quantized;
  quantized.rows = 2;
  quantized.cols = 256;
  quantized.codes.resize(2 * 64);
  for (std::size_t i = 0; i < quantized.codes.size(); ++i) quantized.codes[i] = i % 3;
  quantized.scales = {2.0f, -0.5f, 0.125f, 4.0f};
  std::vector<float> out(2 * 256);
  decode(quantized, codebook, out);
  for (std::uint64_t r = 0; r < 2; ++r)
    for (std::uint64_t c = 0; c < 256; ++c) {
      const std::uint32_t code = quantized.codes[r * 64 + c / 4];
      ASSERT_EQ(out[r * 256 + c],
                codebook.codewords[code * 4 + c % 4] * quantized.scales[r * 2 + c / 128]);
    }
  quantized.codes[70] = 3;
  EXPECT_EQ(expect_error_kind([&] { decode(quantized, codebook, out); }), "vq.code_range");
  codebook.codewords.pop_back();
  EXPECT_EQ(expect_error_kind([&] { decode(quantized, codebook, out); }), "vq.codebook");
}

}  // namespace
}  // namespace qs::vq
