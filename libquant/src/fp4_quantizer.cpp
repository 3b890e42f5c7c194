// Dispatch, shape checks and the pieces every backend shares (decoding rows, the amax scan,
// the group's global scale).

#include "qs/quant/fp4_quantizer.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"

namespace qs::fp4 {
namespace {

constexpr std::array kMethodNames{
    std::pair{ScaleMethod::Max, "max"},
    std::pair{ScaleMethod::Mse, "mse"},
    std::pair{ScaleMethod::Fp8Sweep, "fp8-sweep"},
    std::pair{ScaleMethod::Joint, "joint"},
    std::pair{ScaleMethod::Hessian, "hessian"},
};

std::uint32_t element_bytes(DType dtype) {
  switch (dtype) {
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F32:
      return 4;
    default:
      throw_bad_input("fp4.dtype", fmt::format("NVFP4 quantizes BF16, F16 or F32 weights, not {}",
                                               dtype_name(dtype)));
  }
}

}  // namespace

std::optional<ScaleMethod> parse_scale_method(std::string_view text) {
  for (const auto& [method, name] : kMethodNames)
    if (text == name) return method;
  return std::nullopt;
}

const char* scale_method_name(ScaleMethod method) {
  return kMethodNames[static_cast<std::size_t>(method)].second;
}

namespace detail {

void check_shapes(const WeightView& weight, const Fp4Buffers* out) {
  if (weight.cols % kBlockSize != 0)
    throw_bad_input("fp4.shape", fmt::format("in-features {} are not a multiple of {}", weight.cols,
                                             kBlockSize));
  if (weight.bytes.size() != weight.rows * weight.cols * element_bytes(weight.dtype))
    throw Error(ErrorClass::Internal, "fp4.shape", "weight bytes do not match its shape");
  if (out && (out->packed.size() != weight.rows * weight.cols / 2 ||
              out->scale_codes.size() != weight.rows * weight.cols / kBlockSize))
    throw Error(ErrorClass::Internal, "fp4.shape", "output buffers do not match the weight");
}

void decode_row(const WeightView& weight, std::uint64_t row, float* out) {
  const std::uint32_t size = element_bytes(weight.dtype);
  const std::byte* start = weight.bytes.data() + row * weight.cols * size;
  if (weight.dtype == DType::F32) {
    std::memcpy(out, start, weight.cols * sizeof(float));
    return;
  }
  // Copy the codes out first: the loop over an aligned uint16 array vectorises.
  thread_local std::vector<std::uint16_t> codes;
  codes.resize(weight.cols);
  std::memcpy(codes.data(), start, weight.cols * 2);
  if (weight.dtype == DType::BF16) {
    for (std::uint64_t i = 0; i < weight.cols; ++i) out[i] = bf16_to_f32(codes[i]);
  } else {
    for (std::uint64_t i = 0; i < weight.cols; ++i) out[i] = f16_to_f32(codes[i]);
  }
}

double joint_group_error(std::span<const WeightView> group, float s2, Backend backend) {
  // A search heuristic, not an output: every backend scores candidates the same way here.
  (void)backend;
  double total = 0.0;
  for (const auto& weight : group) {
    // Per-row sums added in row order: a parallel_reduce's order follows the thread count,
    // and the sum decides which candidate scale wins.
    std::vector<double> row_errors(weight.rows);
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, weight.rows),
                      [&](const tbb::blocked_range<std::uint64_t>& rows) {
                        std::vector<float> values(weight.cols);
                        for (std::uint64_t r = rows.begin(); r < rows.end(); ++r) {
                          decode_row(weight, r, values.data());
                          double partial = 0.0;
                          for (std::uint64_t b = 0; b < weight.cols / kBlockSize; ++b) {
                            const float* block = values.data() + b * kBlockSize;
                            const std::uint8_t code = window_scale_code<ThresholdE2M1>(
                                block, block_amax(block), s2, kJointCodeRadius);
                            partial += block_squared_error<ThresholdE2M1>(block, code, s2);
                          }
                          row_errors[r] = partial;
                        }
                      });
    for (double error : row_errors) total += error;
  }
  return total;
}

double hessian_group_error(std::span<const WeightView> group,
                           std::span<const BlockHessians* const> hessians, float s2, int radius,
                           std::uint64_t row_stride) {
  double total = 0.0;
  for (std::size_t m = 0; m < group.size(); ++m) {
    const WeightView& weight = group[m];
    const BlockHessians* blocks = m < hessians.size() ? hessians[m] : nullptr;
    // Per-row sums added in row order, as joint_group_error (the sum picks the winner).
    const std::uint64_t sampled = (weight.rows + row_stride - 1) / row_stride;
    std::vector<double> row_errors(sampled);
    tbb::parallel_for(
        tbb::blocked_range<std::uint64_t>(0, sampled),
        [&](const tbb::blocked_range<std::uint64_t>& rows) {
          std::vector<float> values(weight.cols);
          for (std::uint64_t r = rows.begin(); r < rows.end(); ++r) {
            decode_row(weight, r * row_stride, values.data());
            double partial = 0.0;
            for (std::uint64_t b = 0; b < weight.cols / kBlockSize; ++b) {
              const float* block = values.data() + b * kBlockSize;
              const float amax = block_amax(block);
              if (!blocks) {
                const std::uint8_t code =
                    window_scale_code<ThresholdE2M1>(block, amax, s2, radius);
                partial += block_squared_error<ThresholdE2M1>(block, code, s2);
                continue;
              }
              const float* hessian = blocks->block(b);
              const std::uint8_t code =
                  hessian_window_scale_code<ThresholdE2M1>(block, hessian, amax, s2, radius);
              partial += block_output_error<ThresholdE2M1>(block, hessian, code, s2);
            }
            row_errors[r] = partial;
          }
        });
    for (double error : row_errors) total += error;
  }
  return total;
}

double sweep_group_error(std::span<const WeightView> group, float s2, Backend backend) {
  double total = 0.0;
  for (const auto& weight : group) {
    std::vector<std::uint8_t> packed(weight.rows * weight.cols / 2);
    std::vector<std::uint8_t> scales(weight.rows * weight.cols / kBlockSize);
    total += quantize(weight, s2, ScaleMethod::Fp8Sweep, {packed, scales}, backend).error;
  }
  return total;
}

}  // namespace detail

namespace {

// Finite |x| of BF16 orders like the integer code without its sign bit, so the scan never
// leaves integers: exponent field 0xFF (0x7F80 and above) is Inf or NaN.
AmaxScan scan_bf16_rows(const WeightView& weight, std::uint64_t first, std::uint64_t last) {
  constexpr std::uint16_t kNonFinite = 0x7F80;
  std::vector<std::uint16_t> codes(weight.cols);
  std::uint16_t largest = 0;
  std::uint64_t non_finite = 0;
  for (std::uint64_t r = first; r < last; ++r) {
    std::memcpy(codes.data(), weight.bytes.data() + r * weight.cols * 2, weight.cols * 2);
    for (std::uint16_t code : codes) {
      const auto magnitude = static_cast<std::uint16_t>(code & 0x7FFF);
      const bool finite = magnitude < kNonFinite;
      non_finite += finite ? 0 : 1;
      const std::uint16_t candidate = finite ? magnitude : 0;
      largest = candidate > largest ? candidate : largest;
    }
  }
  return {bf16_to_f32(largest), non_finite};
}

AmaxScan scan_decoded_rows(const WeightView& weight, std::uint64_t first, std::uint64_t last) {
  std::vector<float> row(weight.cols);
  AmaxScan partial;
  for (std::uint64_t r = first; r < last; ++r) {
    detail::decode_row(weight, r, row.data());
    for (float value : row) {
      const float magnitude = finite_abs_or_zero(value);
      partial.non_finite += (f32_to_bits(value) & 0x7FFFFFFFu) >= 0x7F800000u ? 1 : 0;
      partial.amax = magnitude > partial.amax ? magnitude : partial.amax;
    }
  }
  return partial;
}

}  // namespace

AmaxScan scan_amax(const WeightView& weight) {
  detail::check_shapes(weight, nullptr);
  return tbb::parallel_reduce(
      tbb::blocked_range<std::uint64_t>(0, weight.rows), AmaxScan{},
      [&](const tbb::blocked_range<std::uint64_t>& rows, AmaxScan partial) {
        const AmaxScan part = weight.dtype == DType::BF16
                                  ? scan_bf16_rows(weight, rows.begin(), rows.end())
                                  : scan_decoded_rows(weight, rows.begin(), rows.end());
        return AmaxScan{part.amax > partial.amax ? part.amax : partial.amax,
                        part.non_finite + partial.non_finite};
      },
      [](AmaxScan a, AmaxScan b) {
        return AmaxScan{a.amax > b.amax ? a.amax : b.amax, a.non_finite + b.non_finite};
      });
}

float global_scale_for_amax(float amax) {
  if (amax == 0.0f) return 1.0f;
  return amax / (kE2M1Max * kE4M3Max);
}

BlockHessians block_hessians(std::span<const double> second_moments, std::uint64_t cols,
                             double damp) {
  if (cols % kBlockSize != 0 || second_moments.size() != cols * cols)
    throw Error(ErrorClass::Internal, "fp4.shape", "second moments do not match the columns");
  double mean_diagonal = 0.0;
  for (std::uint64_t i = 0; i < cols; ++i) mean_diagonal += second_moments[i * cols + i];
  mean_diagonal /= static_cast<double>(cols);
  const bool empty = !(mean_diagonal > 0.0);
  BlockHessians result;
  result.cols = cols;
  result.blocks.resize(cols * kBlockSize);
  for (std::uint64_t b = 0; b < cols / kBlockSize; ++b)
    for (int i = 0; i < kBlockSize; ++i)
      for (int j = 0; j < kBlockSize; ++j) {
        const std::uint64_t row = b * kBlockSize + i, col = b * kBlockSize + j;
        const double value = empty ? (i == j ? 1.0 : 0.0)
                                   : second_moments[row * cols + col] / mean_diagonal +
                                         (i == j ? damp : 0.0);
        result.blocks[(b * kBlockSize + i) * kBlockSize + j] = static_cast<float>(value);
      }
  return result;
}

float choose_global_scale(std::span<const WeightView> group, ScaleMethod method, Backend backend,
                          std::span<const BlockHessians* const> hessians) {
  float amax = 0.0f;
  for (const auto& weight : group) amax = std::max(amax, scan_amax(weight).amax);
  return choose_global_scale(group, amax, method, backend, hessians);
}

float choose_global_scale(std::span<const WeightView> group, float group_amax, ScaleMethod method,
                          Backend backend, std::span<const BlockHessians* const> hessians) {
  const float amax = group_amax;
  const float base = global_scale_for_amax(amax);
  if (amax == 0.0f) return base;
  if (method == ScaleMethod::Hessian) {
    // joint's search with the output error as the score, on every 4th row: a ±8 window per
    // candidate alignment, then the method's own ±16 search settles between the winner and the
    // plain max scale.
    float best = base;
    double best_error = detail::hessian_group_error(group, hessians, base, kJointCodeRadius,
                                                    kHessianScoreRowStride);
    for (int step = 1; step < kJointScaleSteps; ++step) {
      const float candidate =
          base * static_cast<float>(std::exp2(static_cast<double>(step) / kJointScaleSteps));
      const double error = detail::hessian_group_error(group, hessians, candidate,
                                                       kJointCodeRadius, kHessianScoreRowStride);
      if (error < best_error) {
        best_error = error;
        best = candidate;
      }
    }
    if (best == base) return base;
    return detail::hessian_group_error(group, hessians, best, kHessianCodeRadius,
                                       kHessianScoreRowStride) <
                   detail::hessian_group_error(group, hessians, base, kHessianCodeRadius,
                                               kHessianScoreRowStride)
               ? best
               : base;
  }
  if (method != ScaleMethod::Joint) return base;
  // Score each alignment of the E4M3 grid with a windowed per-block search, then settle
  // between the best one and the plain max scale with the full sweep both will get, so
  // joint is never worse than fp8-sweep.
  float best = base;
  double best_error = detail::joint_group_error(group, base, backend);
  for (int step = 1; step < kJointScaleSteps; ++step) {
    const float candidate =
        base * static_cast<float>(std::exp2(static_cast<double>(step) / kJointScaleSteps));
    const double error = detail::joint_group_error(group, candidate, backend);
    if (error < best_error) {
      best_error = error;
      best = candidate;
    }
  }
  if (best == base) return base;
  return detail::sweep_group_error(group, best, backend) <
                 detail::sweep_group_error(group, base, backend)
             ? best
             : base;
}

ErrorEnergy quantize(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out,
                     Backend backend, const BlockHessians* hessians) {
  detail::check_shapes(weight, &out);
  if (hessians && hessians->cols != weight.cols)
    throw Error(ErrorClass::Internal, "fp4.shape", "block Hessians do not match the weight");
  switch (backend) {
    case Backend::Reference:
      return detail::quantize_reference(weight, s2, method, out, hessians);
    case Backend::Cpu:
      return detail::quantize_cpu(weight, s2, method, out, hessians);
    case Backend::Cuda:
      return detail::quantize_cuda(weight, s2, method, out, hessians);
  }
  return {};
}

void dequantize(std::span<const std::uint8_t> packed, std::span<const std::uint8_t> scale_codes,
                float s2, std::uint64_t rows, std::uint64_t cols, std::span<float> out) {
  if (packed.size() != rows * cols / 2 || scale_codes.size() != rows * cols / kBlockSize ||
      out.size() != rows * cols || cols % kBlockSize != 0)
    throw Error(ErrorClass::Internal, "fp4.shape", "dequantize buffers do not match the shape");
  for (std::uint64_t i = 0; i < rows * cols; ++i) {
    const std::uint8_t byte = packed[i / 2];
    const std::uint8_t nibble = (i % 2 == 0) ? (byte & 0x0F) : (byte >> 4);
    out[i] = e2m1_to_f32(nibble) * e4m3_to_f32(scale_codes[i / kBlockSize]) * s2;
  }
}

}  // namespace qs::fp4
