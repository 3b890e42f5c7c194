#include "qs/quant/device_selection.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <optional>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

constexpr std::size_t kMaxCpuWorkers = 1024;
constexpr const char* kForms = "auto, cpu, cpu:N, cuda, cuda:I[,J...], cuda:all";

[[noreturn]] void malformed(std::string_view text, std::string_view why) {
  throw_bad_input("cli.bad_device",
                  fmt::format("--device '{}': {} (forms: {})", text, why, kForms));
}

// A whole decimal number, nothing else (no sign, no spaces).
std::optional<std::size_t> parse_count(std::string_view digits) {
  if (digits.empty() || digits.size() > 9) return std::nullopt;
  std::size_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

void require_cuda(std::string_view text, const CudaAvailability& cuda) {
  if (!cuda.usable)
    throw_bad_input("cuda.unavailable", fmt::format("--device {}: {}", text, cuda.reason));
}

std::vector<int> parse_cuda_list(std::string_view text, std::string_view list,
                                 const CudaAvailability& cuda) {
  std::vector<int> devices;
  if (list == "all") {
    for (int index = 0; index < cuda.device_count; ++index) devices.push_back(index);
    return devices;
  }
  std::size_t start = 0;
  while (true) {
    const auto comma = list.find(',', start);
    const auto entry =
        list.substr(start, comma == std::string_view::npos ? list.npos : comma - start);
    const auto index = parse_count(entry);
    if (!index) malformed(text, fmt::format("'{}' is not a device index", entry));
    if (std::find(devices.begin(), devices.end(), static_cast<int>(*index)) != devices.end())
      malformed(text, fmt::format("device {} is listed twice", *index));
    devices.push_back(static_cast<int>(*index));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return devices;
}

void check_devices_exist(std::string_view text, const std::vector<int>& devices,
                         const CudaAvailability& cuda) {
  for (int index : devices)
    if (index >= cuda.device_count)
      throw_bad_input("device.not_found",
                      fmt::format("--device {}: cuda:{} does not exist; this machine has {} CUDA "
                                  "device(s), cuda:0 to cuda:{}",
                                  text, index, cuda.device_count, cuda.device_count - 1));
  if (cuda.device_names.size() < static_cast<std::size_t>(cuda.device_count)) return;
  for (int index : devices)
    if (cuda.device_names[index] != cuda.device_names[devices[0]])
      throw_bad_input("device.mixed_models",
                      fmt::format("--device {}: cuda:{} is {} but cuda:{} is {}; list GPUs of one "
                                  "model (results could differ between models in the last bits)",
                                  text, devices[0], cuda.device_names[devices[0]], index,
                                  cuda.device_names[index]));
}

}  // namespace

std::size_t DeviceSelection::worker_count() const {
  return device == ComputeDevice::Cuda ? cuda_devices.size() : cpu_workers;
}

std::string DeviceSelection::describe() const {
  if (device == ComputeDevice::Cuda) return fmt::format("cuda:{}", fmt::join(cuda_devices, ","));
  return cpu_workers == 1 ? std::string("cpu") : fmt::format("cpu:{}", cpu_workers);
}

DeviceSelection parse_device_selection(std::string_view text, const CudaAvailability& cuda) {
  DeviceSelection selection;
  if (text == "auto") {
    if (cuda.usable) {
      selection.device = ComputeDevice::Cuda;
      selection.cuda_devices = {0};
    }
    return selection;
  }
  if (text == "cpu") return selection;
  if (text.starts_with("cpu:")) {
    const auto count = parse_count(text.substr(4));
    if (!count || *count == 0 || *count > kMaxCpuWorkers)
      malformed(text, fmt::format("cpu:N needs a worker count from 1 to {}", kMaxCpuWorkers));
    selection.cpu_workers = *count;
    return selection;
  }
  if (text != "cuda" && !text.starts_with("cuda:")) malformed(text, "no such device");
  // The list's form first, so a malformed list is reported as such on any machine.
  const auto devices =
      text == "cuda" ? std::vector<int>{0} : parse_cuda_list(text, text.substr(5), cuda);
  require_cuda(text, cuda);
  selection.device = ComputeDevice::Cuda;
  selection.cuda_devices = text == "cuda:all" ? parse_cuda_list(text, "all", cuda) : devices;
  check_devices_exist(text, selection.cuda_devices, cuda);
  return selection;
}

}  // namespace qs
