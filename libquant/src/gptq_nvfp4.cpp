// GPTQ on the NVFP4 grid: the driver around the sweeps (gptq_nvfp4.h). The baseline written when
// the Hessian cannot drive GPTQ, and scored against the sweep, is the same scale method without
// error feedback, under the same s2.

#include "qs/quant/gptq_nvfp4.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"

namespace qs::gptq {
namespace {

// The sweep fixes a block's scale when it enters the block, so a block must be swept as 16
// consecutive positions holding its columns in order.
void check_block_order(const PreparedHessian& hessian) {
  for (std::uint64_t j = 0; j < hessian.order.size(); ++j)
    if (hessian.order[j] % fp4::kBlockSize != j % fp4::kBlockSize ||
        hessian.order[j] / fp4::kBlockSize !=
            hessian.order[j - j % fp4::kBlockSize] / fp4::kBlockSize)
      throw Error(ErrorClass::Internal, "gptq.order",
                  "NVFP4 GPTQ needs a Hessian ordered by whole 16-column blocks");
}

std::span<const std::byte> bytes_of(std::span<const float> values) {
  return {reinterpret_cast<const std::byte*>(values.data()), values.size_bytes()};
}

}  // namespace

Nvfp4Result quantize_nvfp4(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                           float s2, fp4::ScaleMethod method, const PreparedHessian& hessian,
                           const fp4::BlockHessians* blocks, fp4::Backend backend,
                           fp4::Fp4Buffers out, bool rtn_baseline) {
  if (weight.size() != rows * cols || hessian.columns != cols || cols % fp4::kBlockSize != 0 ||
      out.packed.size() != rows * cols / 2 ||
      out.scale_codes.size() != rows * cols / fp4::kBlockSize)
    throw Error(ErrorClass::Internal, "gptq.shape", "weight, Hessian and outputs do not match");
  check_block_order(hessian);
  std::vector<float> live(weight.begin(), weight.end());
  for (std::uint64_t c = 0; c < cols; ++c)
    if (hessian.dead[c])
      for (std::uint64_t r = 0; r < rows; ++r) live[r * cols + c] = 0.0f;

  const fp4::WeightView view{DType::F32, bytes_of(live), rows, cols};
  fp4::quantize(view, s2, method, out, backend, blocks);
  std::vector<float> decoded(rows * cols);
  Nvfp4Result result;
  result.fallback = hessian.fallback;
  // tr(W·H·Wᵀ) once (both objectives are relative to it), with the baseline's when asked for
  // or written; the swept codes' objective comes from the sweep.
  std::vector<std::span<const float>> forms{weight};
  result.rtn_computed = rtn_baseline || !hessian.fallback.empty();
  if (result.rtn_computed) {
    fp4::dequantize(out.packed, out.scale_codes, s2, rows, cols, decoded);
    for (std::uint64_t i = 0; i < decoded.size(); ++i) decoded[i] = weight[i] - decoded[i];
    forms.push_back(decoded);
  }
  const auto values =
      detail::quadratic_forms(forms, rows, cols, hessian, backend == fp4::Backend::Cuda);
  const double reference = values[0];
  auto relative = [&](double error) { return reference > 0.0 ? error / reference : 0.0; };
  if (result.rtn_computed) result.rtn_relative_loss = relative(values[1]);
  result.relative_loss = result.rtn_relative_loss;
  if (hessian.fallback.empty()) {
    const detail::Nvfp4Sweep sweep{rows, cols, s2, method, &hessian, blocks};
    std::vector<std::uint8_t> codes(rows * cols);
    std::vector<double> row_objective(rows, 0.0);
    if (backend == fp4::Backend::Reference)
      detail::sweep_nvfp4_reference(live, sweep, codes, out.scale_codes, row_objective);
    else if (backend == fp4::Backend::Cuda)
      detail::sweep_nvfp4_cuda(live, sweep, codes, out.scale_codes, row_objective);
    else
      detail::sweep_nvfp4_cpu(live, sweep, codes, out.scale_codes, row_objective);
    for (std::uint64_t i = 0; i < rows * cols / 2; ++i)
      out.packed[i] = pack_e2m1_pair(codes[2 * i], codes[2 * i + 1]);
    fp4::dequantize(out.packed, out.scale_codes, s2, rows, cols, decoded);
    result.relative_loss =
        relative(detail::swept_objective(row_objective, live, decoded, cols, hessian));
  } else {
    fp4::dequantize(out.packed, out.scale_codes, s2, rows, cols, decoded);
  }
  // In row order, as every NVFP4 path sums its energies.
  for (std::uint64_t r = 0; r < rows; ++r) {
    fp4::ErrorEnergy row;
    for (std::uint64_t c = 0; c < cols; ++c) {
      const float value = weight[r * cols + c];
      const double difference = static_cast<double>(value) - decoded[r * cols + c];
      row.signal +=
          static_cast<double>(fp4::finite_abs_or_zero(value)) * fp4::finite_abs_or_zero(value);
      row.error += difference * difference;
    }
    result.energy.signal += row.signal;
    result.energy.error += row.error;
  }
  return result;
}

}  // namespace qs::gptq
