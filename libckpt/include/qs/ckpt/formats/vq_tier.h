#pragma once
// The tiers of vector-quantized weights (docs/formats/vq.md) as data: what every part of
// quantsmith that reads, plans or writes VQ modules agrees on — a tier's vector length d and
// codebook size K, its bits per weight, how many int32 words a row's packed codes take, and a
// codebook's values. No math beyond that arithmetic (libquant's qs/quant/vq.h encodes and
// decodes).
//
// Scalar tiers are VQ tiers with d = 1 and a fixed uniform codebook (1 bit: ±a, the sign ×
// group-scale scalar), so scalar and vector tiers share one layout.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/core/dtype.h"

namespace qs {

inline constexpr std::uint64_t kVqScaleGroup = 128;  // input columns per scale

enum class VqCodebookKind : std::uint8_t {
  Learned,  // fitted by weighted k-means on scale-normalised sub-vectors
  Uniform,  // d = 1, K evenly spaced levels symmetric about 0 (no zero level), qs/quant/vq.h
};
const char* vq_codebook_kind_name(VqCodebookKind kind);  // "learned", "uniform"
std::optional<VqCodebookKind> parse_vq_codebook_kind(std::string_view text);

// One tier of a menu. Presets: "vq1" (d 8, K 256), "vq1.5" (d 8, K 4096), "vq2" (d 4, K 256),
// "vq3" (d 4, K 4096), and the scalar "int1" (d 1, K 2: sign), "int2" (d 1, K 4),
// "int3" (d 1, K 8).
struct VqTier {
  std::string name;
  std::uint32_t d = 4;
  std::uint32_t k = 256;
  VqCodebookKind kind = VqCodebookKind::Learned;

  std::uint32_t index_bits() const;  // ceil(log2 K), at least 1
  // index_bits / d: the nominal bits per weight of the codes ("vq1" 1, "vq1.5" 1.5).
  double code_bits_per_weight() const;
  // code_bits_per_weight + scale_bits / 128 (shared codebooks are not counted).
  double bits_per_weight(int scale_bits = 16) const;
  // Words per row of packed codes: ceil(cols / d · index_bits / 32).
  std::uint64_t packed_words_per_row(std::uint64_t cols) const;
  bool operator==(const VqTier&) const = default;
};

// The preset tiers, in the order above.
const std::vector<VqTier>& preset_vq_tiers();
std::optional<VqTier> preset_vq_tier(std::string_view name);
// Empty when the tier is usable on `cols` inputs; otherwise why not ("d 3 does not divide 128").
// cols 0: only the tier itself is checked (d divides 128, 2 ≤ K ≤ 2^24, uniform only with d 1).
std::string vq_tier_problem(const VqTier& tier, std::uint64_t cols = 0);

// A tier's codebook: K codewords of d values (row-major [K, d]) already rounded to `dtype`
// (F16 or BF16): what the checkpoint stores and every decode multiplies.
struct VqCodebook {
  VqTier tier;
  DType dtype = DType::F16;
  std::vector<float> codewords;  // [K, d]
};

}  // namespace qs
