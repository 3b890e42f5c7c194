// Calibrated NVFP4 timing on one GLM-5-size expert matrix:
//   qs_bench_gptq_nvfp4 ROWS COLS TOKENS [cpu|cuda]
// (default 4096 6144 2048 cpu: gate_proj and up_proj stacked, sharing a 6144² Hessian; the down
// projection is 6144 2048). Prints the Hessian preparation (16-column block order), the GPTQ
// sweep on the NVFP4 grid with max block scales and with hessian block scales, and the
// uncalibrated quantizer with max, fp8-sweep and hessian scales (with the hessian method's
// global-scale search) beside them, and the peak RSS. Inputs are synthetic (correlated
// activations, Gaussian weights); the timings do not depend on the values.

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <string>
#include <vector>

#include "gptq_bench_support.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/gptq_nvfp4.h"

using qs::bench::seconds_since;

int main(int argc, char** argv) {
  using qs::fp4::ScaleMethod;
  const std::uint64_t rows = argc > 1 ? std::stoull(argv[1]) : 4096;
  const std::uint64_t cols = argc > 2 ? std::stoull(argv[2]) : 6144;
  const std::uint64_t tokens = argc > 3 ? std::stoull(argv[3]) : 2048;
  const bool cuda = argc > 4 && std::string(argv[4]) == "cuda";
  const auto backend = cuda ? qs::fp4::Backend::Cuda : qs::fp4::Backend::Cpu;

  const auto [hessian, weight] = qs::bench::synthetic_layer(rows, cols, tokens);
  const qs::fp4::WeightView view{qs::DType::F32, std::as_bytes(std::span(weight)), rows, cols};
  std::vector<std::uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  const float s2 = qs::fp4::global_scale_for_amax(qs::fp4::scan_amax(view).amax);
  const char* device = cuda ? "cuda" : "cpu";
  fmt::print("calibrated nvfp4 [{} x {}], {} tokens, {}\n", rows, cols, tokens, device);

  auto start = std::chrono::steady_clock::now();
  qs::gptq::Settings settings;
  settings.order_block = qs::gptq::kNvfp4OrderBlock;
  const auto prepared = qs::gptq::prepare_hessian(hessian, cols, tokens, settings, backend);
  fmt::print("  prepare (16-column block order)   {:8.3f} s (damp {})\n", seconds_since(start),
             prepared.damp_used);
  start = std::chrono::steady_clock::now();
  const auto blocks = qs::fp4::block_hessians(hessian, cols, settings.damp);
  fmt::print("  block Hessians (16x16 diagonal)   {:8.3f} s\n", seconds_since(start));

  for (ScaleMethod method : {ScaleMethod::Max, ScaleMethod::Hessian}) {
    const qs::gptq::detail::Nvfp4Sweep sweep{
        rows, cols, s2, method, &prepared, method == ScaleMethod::Hessian ? &blocks : nullptr};
    std::vector<std::uint8_t> codes(rows * cols);
    start = std::chrono::steady_clock::now();
    if (cuda)
      qs::gptq::detail::sweep_nvfp4_cuda(weight, sweep, codes, scales);
    else
      qs::gptq::detail::sweep_nvfp4_cpu(weight, sweep, codes, scales);
    const double sweep_s = seconds_since(start);
    fmt::print(
        "  gptq sweep, {:<7} block scales  {:8.3f} s ({:.1f} GFLOP/s of r·c² lazy updates)\n",
        qs::fp4::scale_method_name(method), sweep_s, 2.0 * rows * cols * cols / 2 / sweep_s / 1e9);
  }
  start = std::chrono::steady_clock::now();
  const auto result = qs::gptq::quantize_nvfp4(weight, rows, cols, s2, ScaleMethod::Max, prepared,
                                               nullptr, backend, {packed, scales});
  fmt::print(
      "  gptq whole (max; + baseline and two objectives) {:8.3f} s, relative loss {:.3e} "
      "(without feedback {:.3e})\n",
      seconds_since(start), result.relative_loss, result.rtn_relative_loss);

  for (ScaleMethod method : {ScaleMethod::Max, ScaleMethod::Fp8Sweep, ScaleMethod::Hessian}) {
    const qs::fp4::BlockHessians* method_blocks =
        method == ScaleMethod::Hessian ? &blocks : nullptr;
    start = std::chrono::steady_clock::now();
    const float chosen = qs::fp4::choose_global_scale(std::span(&view, 1), method, backend,
                                                      std::span(&method_blocks, 1));
    const double global_s = seconds_since(start);
    start = std::chrono::steady_clock::now();
    qs::fp4::quantize(view, chosen, method, {packed, scales}, backend, method_blocks);
    fmt::print("  uncalibrated {:<9} global scale {:8.3f} s, blocks {:8.3f} s\n",
               qs::fp4::scale_method_name(method), global_s, seconds_since(start));
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  fmt::print("  peak RSS {:.0f} MiB ({})\n", usage.ru_maxrss / 1024.0,
             qs::blas::numerics_identity());
  return 0;
}
