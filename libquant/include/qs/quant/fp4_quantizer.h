#pragma once
// NVFP4 weight quantization of whole matrices: the global scale of a fused group, then every
// 16-element block's E4M3 scale and E2M1 codes (fp4_block.h holds the per-block math).
//
// Three backends produce identical bytes and statistics: Reference (scalar loops, the truth),
// Cpu (oneTBB over row ranges) and Cuda (one thread per block). Results do not depend on the
// thread count: per-block errors are summed per row in block order, rows in row order.
//
// Scale selection methods (docs/formats/modelopt-nvfp4.md):
//   max        ModelOpt's default: block scale = amax/(6·s2), s2 = G/2688 ("Two-level scales")
//   mse        ModelOpt's static MSE search over 39 multipliers of the block amax
//   fp8-sweep  every positive E4M3 code per block, least squared error ("FP8 scale sweep")
//   joint      ours: the group's s2 searched jointly with the per-block codes. Candidates
//              s2 = G/2688 · 2^(k/8), k = 0..7, re-align the 12.5 %-spaced E4M3 grid to the
//              blocks ("Beyond ModelOpt"); each is scored with a per-block search over ±8 codes
//              around the max code, and the winner is kept only if its full sweep beats the sweep
//              at k = 0. Blocks then get the full fp8-sweep under that s2, so joint is never
//              worse than fp8-sweep (nor than max) on the group's squared error.
//   hessian    ours after ModelOpt's local-hessian: each block's scale code is the one within
//              ±16 codes of the max code that minimises eᵀ·H_b·e, H_b the block's 16×16
//              diagonal block of the layer's input second moments XᵀX (BlockHessians); the
//              group's s2 searched as joint's, every candidate scored by Σ eᵀ·H_b·e over
//              every 4th row (one scalar for the whole group: a sample decides it). Needs
//              calibration statistics; without them for a module, it is the fp8-sweep.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "qs/ckpt/core/dtype.h"
#include "qs/quant/fp4_block.h"

namespace qs::fp4 {
std::optional<ScaleMethod> parse_scale_method(std::string_view text);
const char* scale_method_name(ScaleMethod method);

enum class Backend : std::uint8_t { Reference, Cpu, Cuda };

// A row-major [rows, cols] weight as stored: BF16, F16 or F32 bytes. cols % 16 == 0.
struct WeightView {
  DType dtype = DType::BF16;
  std::span<const std::byte> bytes;
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
};

// Where the codes go: packed [rows, cols/2] (even element in the low nibble) and scale codes
// [rows, cols/16].
struct Fp4Buffers {
  std::span<std::uint8_t> packed;
  std::span<std::uint8_t> scale_codes;
};

struct ErrorEnergy {
  double signal = 0.0;  // Σ w² (finite w)
  double error = 0.0;   // Σ (w − ŵ)²
};

// The rows' energies summed in row order, so a total computed from rows run in parallel does
// not depend on how the rows were split across threads.
inline ErrorEnergy sum_in_row_order(std::span<const ErrorEnergy> rows) {
  ErrorEnergy total;
  for (const auto& row : rows) {
    total.signal += row.signal;
    total.error += row.error;
  }
  return total;
}

struct AmaxScan {
  float amax = 0.0f;             // max |w| over finite elements
  std::uint64_t non_finite = 0;  // NaN and ±Inf elements
};

// The 16×16 diagonal blocks of a Linear's input second moments XᵀX, what the hessian method
// weighs a block's error with. Normalised by the mean of diag(XᵀX) (the scale does not change
// any choice and keeps f32 away from overflow), then λ = damp is added to the diagonal as
// GPTQ damps H: an input channel that never fired still counts its weight error a little,
// instead of any scale being as good as another for it.
struct BlockHessians {
  std::uint64_t cols = 0;
  std::vector<float> blocks;  // [cols/16][16][16], row-major per block
  const float* block(std::uint64_t index) const {
    return blocks.data() + index * kBlockSize * kBlockSize;
  }
};
// `second_moments`: K·K f64, row-major (CalibrationStatistics::second_moments). An all-zero
// matrix gives identity blocks (the hessian method is then the fp8-sweep's objective).
BlockHessians block_hessians(std::span<const double> second_moments, std::uint64_t cols,
                             double damp);

// Throws BadInput "fp4.shape" for cols % 16 != 0 or a size mismatch, "fp4.dtype" for other
// dtypes.
AmaxScan scan_amax(const WeightView& weight);

// s2 = amax / (6·448); 1.0 for an all-zero group (every block then gets the zero-block scale
// and zero codes, and s2 stays a normal, finite number engines can invert).
float global_scale_for_amax(float amax);

// The group's s2: from the joint amax for max / mse / fp8-sweep, searched for joint and
// hessian. `hessians`: per member, its BlockHessians (hessian method; nullptr: none).
float choose_global_scale(std::span<const WeightView> group, ScaleMethod method, Backend backend,
                          std::span<const BlockHessians* const> hessians = {});
// The same when the caller already scanned the group: `group_amax` = max of scan_amax.
float choose_global_scale(std::span<const WeightView> group, float group_amax, ScaleMethod method,
                          Backend backend, std::span<const BlockHessians* const> hessians = {});

// `hessians`: the weight's BlockHessians for the hessian method (nullptr: fp8-sweep's choice).
ErrorEnergy quantize(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out,
                     Backend backend, const BlockHessians* hessians = nullptr);

// w = e2m1(code) · e4m3(scale) · s2, into `out` [rows, cols].
void dequantize(std::span<const std::uint8_t> packed, std::span<const std::uint8_t> scale_codes,
                float s2, std::uint64_t rows, std::uint64_t cols, std::span<float> out);

// ---- Backends (the dispatcher above picks one; tests call them directly) ----
namespace detail {
// Squared error of the group under s2 with the joint method's per-block window search.
double joint_group_error(std::span<const WeightView> group, float s2, Backend backend);
// Squared error of the group under s2 with the full fp8-sweep.
double sweep_group_error(std::span<const WeightView> group, float s2, Backend backend);
// Σ eᵀ·H_b·e over the blocks of every `row_stride`-th row of the group under s2, each block's
// code the best within `radius` of its max code. Members without BlockHessians count their
// squared error.
double hessian_group_error(std::span<const WeightView> group,
                           std::span<const BlockHessians* const> hessians, float s2, int radius,
                           std::uint64_t row_stride);
ErrorEnergy quantize_reference(const WeightView& weight, float s2, ScaleMethod method,
                               Fp4Buffers out, const BlockHessians* hessians = nullptr);
ErrorEnergy quantize_cpu(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out,
                         const BlockHessians* hessians = nullptr);
ErrorEnergy quantize_cuda(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out,
                          const BlockHessians* hessians = nullptr);
void check_shapes(const WeightView& weight, const Fp4Buffers* out);
// Row `row` of the weight decoded to f32.
void decode_row(const WeightView& weight, std::uint64_t row, float* out);
}  // namespace detail

}  // namespace qs::fp4
