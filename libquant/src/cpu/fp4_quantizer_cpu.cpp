// The CPU backend: oneTBB over row ranges, each row decoded into a small f32 buffer while it
// is hot in cache, and each block encoded once with the branch-free ThresholdE2M1 rounding
// (its codes also give the block's error, no second pass). The fixed 16-wide loops vectorise.
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

// One block: scale code by `method`, codes packed into `packed`, and the block's squared
// error and signal, equal to block_squared_error / block_signal of the same code.
// Compiled twice, for AVX2 and for the x86-64 baseline, and picked at load time: twice the
// vector width where the CPU has it, the same results (no FMA contraction, same operations).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

QS_VECTOR_CLONES void quantize_row(const float* values, std::uint64_t cols, float s2,
                                   ScaleMethod method, std::uint8_t* scale_codes,
                                   std::uint8_t* packed, ErrorEnergy& row);

inline __attribute__((always_inline)) void quantize_block(const float* block, float s2,
                                                          ScaleMethod method,
                                                          std::uint8_t* scale_code,
                                                          std::uint8_t* packed, float* error,
                                                          float* signal) {
  const std::uint8_t code = method == ScaleMethod::Max
                                ? max_scale_code(block_amax(block), s2)
                                : choose_scale_code<ThresholdE2M1>(block, s2, method);
  const float divisor = e4m3_values()[code] * s2;  // scale_divisor(code, s2)
  std::uint8_t codes[kBlockSize];
  float errors[kBlockSize];
  float signals[kBlockSize];
  for (int i = 0; i < kBlockSize; ++i) {
    codes[i] = ThresholdE2M1::encode(block[i] / divisor);
    const float difference = block[i] - ThresholdE2M1::decode_scaled(codes[i], divisor);
    errors[i] = difference * difference;
    const float magnitude = finite_abs_or_zero(block[i]);
    signals[i] = magnitude * magnitude;
  }
  for (int i = 0; i < kBlockSize; i += 2) packed[i / 2] = pack_e2m1_pair(codes[i], codes[i + 1]);
  *scale_code = code;
  *error = tree_sum16(errors);
  *signal = tree_sum16(signals);
}

QS_VECTOR_CLONES void quantize_row(const float* values, std::uint64_t cols, float s2,
                                   ScaleMethod method, std::uint8_t* scale_codes,
                                   std::uint8_t* packed, ErrorEnergy& row) {
  for (std::uint64_t b = 0; b < cols / kBlockSize; ++b) {
    float error = 0.0f;
    float signal = 0.0f;
    quantize_block(values + b * kBlockSize, s2, method, scale_codes + b,
                   packed + b * kBlockSize / 2, &error, &signal);
    row.signal += signal;
    row.error += error;
  }
}

}  // namespace

ErrorEnergy quantize_cpu(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out) {
  const std::uint64_t blocks_per_row = weight.cols / kBlockSize;
  std::vector<ErrorEnergy> per_row(weight.rows);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, weight.rows),
                    [&](const tbb::blocked_range<std::uint64_t>& rows) {
                      std::vector<float> values(weight.cols);
                      for (std::uint64_t r = rows.begin(); r < rows.end(); ++r) {
                        decode_row(weight, r, values.data());
                        ErrorEnergy row;
                        quantize_row(values.data(), weight.cols, s2, method,
                                     out.scale_codes.data() + r * blocks_per_row,
                                     out.packed.data() + r * weight.cols / 2, row);
                        per_row[r] = row;
                      }
                    });
  ErrorEnergy total;
  for (const auto& row : per_row) {
    total.signal += row.signal;
    total.error += row.error;
  }
  return total;
}

}  // namespace qs::fp4::detail
