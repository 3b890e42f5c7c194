#include "quantize_fingerprint.h"

#include <fmt/format.h>

#include <filesystem>

#include "cli_support.h"
#include "qs/quant/deterministic_blas.h"

namespace qs::cli {

namespace {

// The device the numerics run on (GPTQ's sweep on a GPU differs from the CPU's in the last
// bits) and the BLAS build and CPU kernels (results do not depend on thread counts,
// deterministic_blas.h, but do on these). A resume elsewhere is refused rather than mixing
// shards of two numerical paths. The number of workers is not part of it: it does not change
// the output, so a job may resume on more or fewer devices of the same model.
std::string numerics_fingerprint(const DeviceSelection& devices, const CudaAvailability& cuda) {
  const bool on_gpu = devices.device == ComputeDevice::Cuda;
  return fmt::format("|device={}|blas={}",
                     on_gpu ? "cuda:" + cuda.device_names.at(devices.cuda_devices[0]) : "cpu",
                     blas::numerics_identity());
}

}  // namespace

std::string quantize_fingerprint(const QuantizeInputs& inputs, const Recipe& recipe,
                                 const DeviceSelection& devices, const CudaAvailability& cuda) {
  std::string fingerprint = fmt::format(
      "quantsmith {}|recipe={}|format={}|method={}|nan={}", kQuantsmithVersion, inputs.recipe_text,
      output_format_name(recipe.format), recipe.scale_method, inputs.nan_policy);
  for (const auto& parameter : inputs.parameters) fingerprint += "|" + parameter;
  fingerprint += numerics_fingerprint(devices, cuda);
  if (!inputs.calibration.empty())
    fingerprint += fmt::format(
        "|calib={}:{}:{}", inputs.calibration, std::filesystem::file_size(inputs.calibration),
        std::filesystem::last_write_time(inputs.calibration).time_since_epoch().count());
  return fingerprint;
}

}  // namespace qs::cli
