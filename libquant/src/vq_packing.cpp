// VQ code packing (docs/formats/vq.md): each row's indices as one little-endian bit stream of
// index_bits-wide fields in uint32 words, index 0 in the lowest bits of word 0; a field may
// straddle two words; the last word's unused high bits are 0. Rows start on a word boundary.

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/quant/vq.h"

namespace qs::vq {
namespace {

struct RowLayout {
  std::uint64_t codes = 0;  // per row
  std::uint64_t words = 0;  // per row
  std::uint32_t bits = 0;   // per code
};

RowLayout row_layout(std::uint64_t rows, std::uint64_t cols, const Tier& tier,
                     std::uint64_t code_count, std::uint64_t word_count, const char* what) {
  if (tier.d == 0 || cols % tier.d != 0)
    throw_bad_input("vq.shape", fmt::format("tier {}: d {} does not divide the {} input columns",
                                            tier.name, tier.d, cols));
  const RowLayout layout{cols / tier.d, tier.packed_words_per_row(cols), tier.index_bits()};
  if (code_count != rows * layout.codes || word_count != rows * layout.words)
    throw Error(ErrorClass::Internal, "vq.shape",
                fmt::format("{}: {} codes and {} words for {} rows of {} codes / {} words", what,
                            code_count, word_count, rows, layout.codes, layout.words));
  return layout;
}

void throw_code_range(std::uint64_t row, std::uint64_t position, std::uint64_t code,
                      const Tier& tier) {
  throw_bad_input("vq.code_range",
                  fmt::format("code {} at row {}, vector {} is out of range for tier {} (K = {})",
                              code, row, position, tier.name, tier.k));
}

}  // namespace

void pack_codes(std::span<const std::uint32_t> codes, std::uint64_t rows, std::uint64_t cols,
                const Tier& tier, std::span<std::int32_t> out) {
  const RowLayout layout = row_layout(rows, cols, tier, codes.size(), out.size(), "pack_codes");
  for (std::uint64_t row = 0; row < rows; ++row) {
    const std::uint32_t* row_codes = codes.data() + row * layout.codes;
    std::int32_t* row_words = out.data() + row * layout.words;
    // Bits gather in a 64-bit accumulator and leave it a whole word at a time.
    std::uint64_t pending = 0;
    std::uint32_t pending_bits = 0;
    std::uint64_t word = 0;
    for (std::uint64_t i = 0; i < layout.codes; ++i) {
      if (row_codes[i] >= tier.k) throw_code_range(row, i, row_codes[i], tier);
      pending |= std::uint64_t{row_codes[i]} << pending_bits;
      pending_bits += layout.bits;
      while (pending_bits >= 32) {
        row_words[word++] = static_cast<std::int32_t>(static_cast<std::uint32_t>(pending));
        pending >>= 32;
        pending_bits -= 32;
      }
    }
    if (pending_bits > 0)
      row_words[word++] = static_cast<std::int32_t>(static_cast<std::uint32_t>(pending));
  }
}

void unpack_codes(std::span<const std::int32_t> packed, std::uint64_t rows, std::uint64_t cols,
                  const Tier& tier, std::span<std::uint32_t> out) {
  const RowLayout layout =
      row_layout(rows, cols, tier, out.size(), packed.size(), "unpack_codes");
  const std::uint64_t mask = (std::uint64_t{1} << layout.bits) - 1;
  for (std::uint64_t row = 0; row < rows; ++row) {
    const std::int32_t* row_words = packed.data() + row * layout.words;
    std::uint32_t* row_codes = out.data() + row * layout.codes;
    std::uint64_t pending = 0;
    std::uint32_t pending_bits = 0;
    std::uint64_t word = 0;
    for (std::uint64_t i = 0; i < layout.codes; ++i) {
      while (pending_bits < layout.bits) {
        pending |= std::uint64_t{static_cast<std::uint32_t>(row_words[word++])} << pending_bits;
        pending_bits += 32;
      }
      const std::uint64_t code = pending & mask;
      if (code >= tier.k) throw_code_range(row, i, code, tier);
      row_codes[i] = static_cast<std::uint32_t>(code);
      pending >>= layout.bits;
      pending_bits -= layout.bits;
    }
  }
}

}  // namespace qs::vq
