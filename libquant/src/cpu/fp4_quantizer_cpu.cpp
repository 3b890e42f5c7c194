// The CPU backend: oneTBB over row ranges, each row decoded into a small f32 buffer while it
// is hot in cache and quantized in vectorisable phases with the branch-free ThresholdE2M1
// rounding (its codes also give the block's error, no second pass).
// Per-row sums are stored and added in row order afterwards, so the result does not depend
// on how TBB splits the rows.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <array>
#include <vector>

#include "qs/quant/fp4_quantizer.h"

namespace qs::fp4::detail {
namespace {

// e4m3_to_f32 for every code, built from the codec once: a load instead of the codec's
// subnormal normalisation loop for each block.
const std::array<float, 256>& e4m3_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> values{};
    for (int code = 0; code < 256; ++code)
      values[code] = e4m3_to_f32(static_cast<std::uint8_t>(code));
    return values;
  }();
  return table;
}

// Compiled twice, for AVX2 and for the x86-64 baseline, and picked at load time: twice the
// vector width where the CPU has it, the same results (no FMA contraction, same operations).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

// Scratch for one row, reused across the rows a thread handles.
struct RowScratch {
  std::vector<float> divisors;  // per element: its block's e4m3(scale) · s2
  std::vector<float> errors;    // per element, then per-block tree sums in place
  std::vector<float> signals;
  std::vector<float> maxima;  // per element |x| (finite), then per-block tree maxima in place
  std::vector<std::uint8_t> codes;
};

// One row in phases, each a flat loop the compiler vectorises across the whole row: scale
// codes per block (scalar, one per 16 elements), then division, rounding, error and signal
// terms per element, then packing, then the fixed per-block trees. The arithmetic per element
// and the tree order are those of block_squared_error / block_signal, so the results equal the
// reference's bit for bit.
QS_VECTOR_CLONES void quantize_row(const float* values, std::uint64_t cols, float s2,
                                   ScaleMethod method, const BlockHessians* hessians,
                                   std::uint8_t* scale_codes,
                                   std::uint8_t* packed, ErrorEnergy& row, RowScratch& scratch) {
  const std::uint64_t blocks = cols / kBlockSize;
  scratch.divisors.resize(cols);
  scratch.errors.resize(cols);
  scratch.signals.resize(cols);
  scratch.codes.resize(cols);
  scratch.maxima.resize(cols);
  // Block amaxes as trees over the row: max is exact in any order, so this equals block_amax.
  float* maxima = scratch.maxima.data();
  for (std::uint64_t i = 0; i < cols; ++i) maxima[i] = finite_abs_or_zero(values[i]);
  for (int width = kBlockSize / 2; width >= 1; width /= 2)
    for (std::uint64_t b = 0; b < blocks; ++b)
      for (int i = 0; i < width; ++i) {
        const std::uint64_t at = b * kBlockSize + static_cast<std::uint64_t>(i);
        maxima[at] = maxima[at + width] > maxima[at] ? maxima[at + width] : maxima[at];
      }
  const auto& scale_values = e4m3_values();
  for (std::uint64_t b = 0; b < blocks; ++b) {
    const float* block = values + b * kBlockSize;
    const std::uint8_t code = method == ScaleMethod::Max
                                  ? max_scale_code(maxima[b * kBlockSize], s2)
                                  : choose_scale_code<ThresholdE2M1>(
                                        block, s2, method, hessians ? hessians->block(b) : nullptr);
    scale_codes[b] = code;
    const float divisor = scale_values[code] * s2;  // scale_divisor(code, s2)
    for (int i = 0; i < kBlockSize; ++i) scratch.divisors[b * kBlockSize + i] = divisor;
  }
  float* errors = scratch.errors.data();
  float* signals = scratch.signals.data();
  std::uint8_t* codes = scratch.codes.data();
  const float* divisors = scratch.divisors.data();
  for (std::uint64_t i = 0; i < cols; ++i) {
    const std::uint8_t code = ThresholdE2M1::encode(values[i] / divisors[i]);
    codes[i] = code;
    const float difference = values[i] - ThresholdE2M1::decode_scaled(code, divisors[i]);
    errors[i] = difference * difference;
    const float magnitude = finite_abs_or_zero(values[i]);
    signals[i] = magnitude * magnitude;
  }
  for (std::uint64_t j = 0; j < cols / 2; ++j)
    packed[j] = pack_e2m1_pair(codes[2 * j], codes[2 * j + 1]);
  for (int width = kBlockSize / 2; width >= 1; width /= 2)
    for (std::uint64_t b = 0; b < blocks; ++b)
      for (int i = 0; i < width; ++i) {
        const std::uint64_t at = b * kBlockSize + static_cast<std::uint64_t>(i);
        errors[at] = errors[at] + errors[at + width];
        signals[at] = signals[at] + signals[at + width];
      }
  for (std::uint64_t b = 0; b < blocks; ++b) {
    row.error += errors[b * kBlockSize];
    row.signal += signals[b * kBlockSize];
  }
}

}  // namespace

ErrorEnergy quantize_cpu(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out,
                         const BlockHessians* hessians) {
  const std::uint64_t blocks_per_row = weight.cols / kBlockSize;
  std::vector<ErrorEnergy> per_row(weight.rows);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, weight.rows),
                    [&](const tbb::blocked_range<std::uint64_t>& rows) {
                      std::vector<float> values(weight.cols);
                      RowScratch scratch;
                      for (std::uint64_t r = rows.begin(); r < rows.end(); ++r) {
                        decode_row(weight, r, values.data());
                        ErrorEnergy row;
                        quantize_row(values.data(), weight.cols, s2, method, hessians,
                                     out.scale_codes.data() + r * blocks_per_row,
                                     out.packed.data() + r * weight.cols / 2, row, scratch);
                        per_row[r] = row;
                      }
                    });
  return sum_in_row_order(per_row);
}

}  // namespace qs::fp4::detail
