// Benchmark (needs a GPU): the CUDA quantizers as quantsmith calls them (host buffers in,
// host buffers out) beside the copy bandwidths that bound them, measured in the same run on
// the same device: device-to-device (what a kernel reading and writing GPU memory could
// reach), and host-to-device / device-to-host from pageable memory (what every call pays,
// since the executor hands the quantizers pageable host buffers).
//
//   qs_bench_gpu [MiB of BF16 input, default 512] [--json FILE]
//
// Per kernel: GB/s of BF16 read; the share of the D2D bandwidth that is; and the share of the
// call a pure transfer of the same bytes in and out would take (1.0: the call is all
// transfer, the kernel hides behind it). Exit 3 when no GPU is usable.

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/fp8_block_quantizer.h"
#include "qs/quant/int_quantizer.h"

namespace {

using Clock = std::chrono::steady_clock;

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  fmt::print(stderr, "qs_bench_gpu: {}: {}\n", what, cudaGetErrorString(status));
  std::exit(1);
}

// Best of `runs` wall times of `function`, after one untimed run (allocation, module load).
double best_seconds(int runs, const std::function<void()>& function) {
  function();
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    function();
    check(cudaDeviceSynchronize(), "synchronize");
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return best;
}

struct CopyBandwidth {
  double device_to_device = 0.0;  // GB/s of bytes copied (each is read once and written once)
  double host_to_device = 0.0;    // pageable host memory, as the quantizers copy
  double device_to_host = 0.0;
};

CopyBandwidth measure_copies(std::vector<std::byte>& host) {
  const std::size_t bytes = host.size();
  void* a = nullptr;
  void* b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  const double gb = static_cast<double>(bytes) / 1e9;
  CopyBandwidth bandwidth;
  bandwidth.device_to_device = gb / best_seconds(5, [&] {
                                 check(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "d2d");
                               });
  bandwidth.host_to_device =
      gb / best_seconds(
               3, [&] { check(cudaMemcpy(a, host.data(), bytes, cudaMemcpyHostToDevice), "h2d"); });
  bandwidth.device_to_host =
      gb / best_seconds(
               3, [&] { check(cudaMemcpy(host.data(), b, bytes, cudaMemcpyDeviceToHost), "d2h"); });
  check(cudaFree(a), "cudaFree");
  check(cudaFree(b), "cudaFree");
  return bandwidth;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qs;
  std::uint64_t mib = 512;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else
      mib = std::strtoull(argv[i], nullptr, 10);
  }
  const auto cuda = cuda_availability();
  if (!cuda.usable) {
    fmt::print(stderr, "qs_bench_gpu: no GPU: {}\n", cuda.reason);
    return 3;
  }
  const std::uint64_t cols = 6144;  // a GLM-5 expert's input width
  const std::uint64_t rows = std::max<std::uint64_t>(mib * (1ull << 20) / 2 / cols / 128, 1) * 128;
  std::vector<std::byte> bf16(rows * cols * 2);
  std::mt19937 generator(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (std::uint64_t i = 0; i < rows * cols; ++i) {
    const std::uint16_t code = f32_to_bf16(normal(generator));
    std::memcpy(bf16.data() + 2 * i, &code, 2);
  }
  const double gb_in = static_cast<double>(bf16.size()) / 1e9;
  std::vector<std::byte> scratch(bf16.size());
  const auto copies = measure_copies(scratch);

  nlohmann::ordered_json report;
  report["gpu"] = cuda.reason;
  report["input"] = {{"rows", rows}, {"cols", cols}, {"dtype", "BF16"}, {"gb", gb_in}};
  report["copy_gb_per_s"] = {{"device_to_device", copies.device_to_device},
                             {"host_to_device", copies.host_to_device},
                             {"device_to_host", copies.device_to_host}};
  fmt::print("GPU {}: {} x {} BF16 ({:.2f} GB), best of 3\n", cuda.reason, rows, cols, gb_in);
  fmt::print(
      "copies: device-to-device {:.1f} GB/s, host-to-device {:.1f} GB/s, "
      "device-to-host {:.1f} GB/s (pageable)\n",
      copies.device_to_device, copies.host_to_device, copies.device_to_host);
  fmt::print("{:<22} {:>10} {:>10} {:>14}\n", "kernel (host to host)", "GB/s in", "vs D2D",
             "transfer share");

  const fp4::WeightView view{DType::BF16, bf16, rows, cols};
  auto kernels = nlohmann::ordered_json::array();  // into the report at the end
  const auto record = [&](const std::string& name, double seconds, std::uint64_t bytes_out) {
    const double transfer = gb_in / copies.host_to_device +
                            static_cast<double>(bytes_out) / 1e9 / copies.device_to_host;
    const double gb_per_s = gb_in / seconds;
    fmt::print("{:<22} {:>10.2f} {:>10.3f} {:>14.2f}\n", name, gb_per_s,
               gb_per_s / copies.device_to_device, transfer / seconds);
    kernels.push_back({{"name", name},
                       {"seconds", seconds},
                       {"gb_per_s_in", gb_per_s},
                       {"vs_device_to_device", gb_per_s / copies.device_to_device},
                       {"transfer_share", transfer / seconds},
                       {"device_to_device_gb_per_s", copies.device_to_device}});
  };

  std::vector<std::uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  const float s2 = fp4::global_scale_for_amax(fp4::scan_amax(view).amax);
  for (auto method : {fp4::ScaleMethod::Max, fp4::ScaleMethod::Fp8Sweep}) {
    const double t = best_seconds(3, [&] {
      fp4::quantize(view, s2, method, {packed, scales}, fp4::Backend::Cuda);
    });
    record(fmt::format("nvfp4 {}", fp4::scale_method_name(method)), t,
           packed.size() + scales.size());
  }
  for (const auto& [label, scheme] :
       {std::pair{"int8 sym g128", intq::IntScheme{{8, true}, 128, intq::Observer::MinMax}},
        std::pair{"int4 asym g128", intq::IntScheme{{4, false}, 128, intq::Observer::MinMax}}}) {
    intq::IntQuantized out;
    const double t =
        best_seconds(3, [&] { intq::quantize(view, scheme, out, fp4::Backend::Cuda); });
    // The unpacked codes (one byte each) and the f32 scales and zeros come back.
    record(label, t, out.codes.size() + out.scales.size() * 4 + out.zeros.size());
  }
  {
    std::vector<std::uint8_t> codes(rows * cols);
    std::vector<float> block_scales(fp8::scale_rows(rows) * fp8::scale_cols(cols));
    const double t = best_seconds(3, [&] {
      fp8::quantize(view, {codes, block_scales}, fp8::Backend::Cuda);
    });
    record("fp8 block 128x128", t, codes.size() + block_scales.size() * 4);
  }
  report["kernels"] = kernels;
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  return 0;
}
