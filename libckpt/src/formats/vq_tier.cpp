// VQ tiers as data (qs/ckpt/formats/vq_tier.h).
#include "qs/ckpt/formats/vq_tier.h"

#include <fmt/format.h>

namespace qs {

const char* vq_codebook_kind_name(VqCodebookKind kind) {
  return kind == VqCodebookKind::Uniform ? "uniform" : "learned";
}

std::optional<VqCodebookKind> parse_vq_codebook_kind(std::string_view text) {
  if (text == "learned") return VqCodebookKind::Learned;
  if (text == "uniform") return VqCodebookKind::Uniform;
  return std::nullopt;
}

std::uint32_t VqTier::index_bits() const {
  std::uint32_t bits = 1;
  while ((std::uint64_t{1} << bits) < k) ++bits;
  return bits;
}

double VqTier::code_bits_per_weight() const { return static_cast<double>(index_bits()) / d; }

double VqTier::bits_per_weight(int scale_bits) const {
  return code_bits_per_weight() + static_cast<double>(scale_bits) / kVqScaleGroup;
}

std::uint64_t VqTier::packed_words_per_row(std::uint64_t cols) const {
  const std::uint64_t bits = cols / d * index_bits();
  return (bits + 31) / 32;
}

const std::vector<VqTier>& preset_vq_tiers() {
  static const std::vector<VqTier> tiers = {
      {"vq1", 8, 256, VqCodebookKind::Learned},   {"vq1.5", 8, 4096, VqCodebookKind::Learned},
      {"vq2", 4, 256, VqCodebookKind::Learned},   {"vq3", 4, 4096, VqCodebookKind::Learned},
      {"int1", 1, 2, VqCodebookKind::Uniform},    {"int2", 1, 4, VqCodebookKind::Uniform},
      {"int3", 1, 8, VqCodebookKind::Uniform},
  };
  return tiers;
}

std::optional<VqTier> preset_vq_tier(std::string_view name) {
  for (const auto& tier : preset_vq_tiers())
    if (tier.name == name) return tier;
  return std::nullopt;
}

std::string vq_tier_problem(const VqTier& tier, std::uint64_t cols) {
  if (tier.d == 0 || kVqScaleGroup % tier.d != 0)
    return fmt::format("tier {}: d {} does not divide the {}-column scale group", tier.name, tier.d,
                       kVqScaleGroup);
  if (tier.k < 2 || tier.k > (1u << 24))
    return fmt::format("tier {}: K {} is outside 2..16777216", tier.name, tier.k);
  if (tier.kind == VqCodebookKind::Uniform && tier.d != 1)
    return fmt::format("tier {}: a uniform codebook needs d 1, not {}", tier.name, tier.d);
  if (cols != 0 && cols % kVqScaleGroup != 0)
    return fmt::format("{} input columns are not a multiple of the {}-column scale group", cols,
                       kVqScaleGroup);
  return {};
}

}  // namespace qs
