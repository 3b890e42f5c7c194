#include "cli_support.h"

#include <fmt/format.h>

#include <array>

#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"

namespace qs::cli {

std::string human_bytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 5> kUnits{"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kUnits.size()) {
    value /= 1024.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", value, kUnits[unit]);
}

}  // namespace qs::cli

namespace qs::cli {

bool runner_uses_cuda(const std::string& device) {
  const auto cuda = cuda_availability();
  if (device == "cpu") return false;
  if (device == "auto") return cuda.usable;
  if (device == "cuda" || device == "cuda:0") {
    if (!cuda.usable) throw_bad_input("cuda.unavailable", "--device cuda: " + cuda.reason);
    return true;
  }
  throw_bad_input("cli.bad_device", "no device '" + device + "' (auto, cpu, cuda)");
}

}  // namespace qs::cli
