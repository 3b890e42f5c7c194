// Builds without CUDA: asking for the CUDA backend is a usage error the caller can report.

#include "qs/ckpt/core/error.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/fp8_block_quantizer.h"
#include "qs/quant/gptq.h"
#include "qs/quant/gptq_nvfp4.h"
#include "qs/quant/int_quantizer.h"

namespace qs::fp4::detail {

ErrorEnergy quantize_cuda(const WeightView&, float, ScaleMethod, Fp4Buffers,
                          const BlockHessians*) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::fp4::detail

namespace qs::fp8::detail {

void quantize_cuda(const WeightView&, Fp8Buffers) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::fp8::detail

namespace qs::intq::detail {

ErrorEnergy quantize_cuda(const WeightView&, const IntScheme&, IntQuantized&) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::intq::detail

namespace qs::gptq::detail {

void sweep_cuda(std::span<const float>, const intq::IntScheme&, const PreparedHessian&,
                intq::IntQuantized&, std::span<double>) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

std::vector<double> quadratic_forms_cuda(std::span<const std::span<const float>>, std::uint64_t,
                                         std::uint64_t, const PreparedHessian&) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

bool inverse_cholesky_upper_cuda(std::vector<double>&, std::uint64_t, std::vector<float>&) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

void sweep_nvfp4_cuda(std::span<const float>, const Nvfp4Sweep&, std::span<std::uint8_t>,
                      std::span<std::uint8_t>, std::span<double>) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::gptq::detail
