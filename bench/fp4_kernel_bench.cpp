// Benchmark: NVFP4 quantization of a large BF16 buffer with the CPU backend, on one thread and
// on all threads, for every scale method, beside memcpy of the same buffer in the same run
// (and the CUDA backend beside a device-to-device copy when a GPU is present).
//
//   qs_bench_fp4 [MiB of BF16 input, default 256] [method: max, mse, fp8-sweep, joint; default all]

#include <fmt/format.h>
#include <tbb/global_control.h>
#include <tbb/info.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/fp4_quantizer.h"

namespace {

using Clock = std::chrono::steady_clock;

template <typename Function>
double best_seconds(int runs, Function&& function) {
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    function();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qs;
  const std::uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 256;
  const std::string only = argc > 2 ? argv[2] : "";
  const std::uint64_t cols = 4096;
  const std::uint64_t rows = mib * (1ull << 20) / 2 / cols;
  std::vector<std::byte> bf16(rows * cols * 2);
  std::mt19937 generator(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (std::uint64_t i = 0; i < rows * cols; ++i) {
    const std::uint16_t code = f32_to_bf16(normal(generator));
    std::memcpy(bf16.data() + 2 * i, &code, 2);
  }
  const fp4::WeightView view{DType::BF16, bf16, rows, cols};
  std::vector<std::uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  std::vector<std::byte> copy(bf16.size());
  const double gb = static_cast<double>(bf16.size()) / 1e9;
  const int cores = tbb::info::default_concurrency();
  fmt::print("NVFP4 CPU kernel: {} MiB of BF16 [{} x {}], best of 3, {} cores\n", mib, rows, cols,
             cores);
  fmt::print("{:<12} {:>8} {:>14} {:>14}\n", "method", "threads", "GB/s (BF16 in)", "vs memcpy");
  for (int threads : {1, cores}) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    const double t_copy = best_seconds(3, [&] { std::memcpy(copy.data(), bf16.data(), bf16.size()); });
    fmt::print("{:<12} {:>8} {:>14.2f} {:>14}\n", "memcpy", 1, gb / t_copy, "1.00");
    for (auto method : {fp4::ScaleMethod::Max, fp4::ScaleMethod::Mse, fp4::ScaleMethod::Fp8Sweep,
                        fp4::ScaleMethod::Joint}) {
      if (!only.empty() && only != fp4::scale_method_name(method)) continue;
      const float s2 = fp4::global_scale_for_amax(fp4::scan_amax(view).amax);
      const int runs = method == fp4::ScaleMethod::Max ? 3 : 1;
      const double t = best_seconds(runs, [&] {
        fp4::quantize(view, s2, method, {packed, scales}, fp4::Backend::Cpu);
      });
      fmt::print("{:<12} {:>8} {:>14.3f} {:>14.3f}\n", fp4::scale_method_name(method), threads,
                 gb / t, t_copy / t);
    }
  }
  const auto cuda = cuda_availability();
  if (!cuda.usable) {
    fmt::print("CUDA: skipped ({})\n", cuda.reason);
    return 0;
  }
  for (auto method : {fp4::ScaleMethod::Max, fp4::ScaleMethod::Fp8Sweep}) {
    const float s2 = fp4::global_scale_for_amax(fp4::scan_amax(view).amax);
    const double t = best_seconds(3, [&] {
      fp4::quantize(view, s2, method, {packed, scales}, fp4::Backend::Cuda);
    });
    fmt::print("CUDA {:<10} {:>14.2f} GB/s (includes host<->device copies)\n",
               fp4::scale_method_name(method), gb / t);
  }
  return 0;
}
