#pragma once
// What decides a quantize job's output bytes besides its plan: a resume (and the VQ
// preparation saved in OUT) is refused when any of it changed.

#include <string>
#include <vector>

#include "qs/ckpt/plan/recipe.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/device_selection.h"

namespace qs::cli {

struct QuantizeInputs {
  std::string recipe_text;              // the recipe file's text, or the --scheme's recipe
  std::vector<std::string> parameters;  // --param NAME=VALUE, as given
  std::string nan_policy;
  std::string calibration;  // --calib STATS, or empty
};

// The recipe and flags, the numerics (device and BLAS build) and the statistics file (path,
// size, modification time). The pipelined job adds its tokens' digest.
std::string quantize_fingerprint(const QuantizeInputs& inputs, const Recipe& recipe,
                                 const DeviceSelection& devices, const CudaAvailability& cuda);

}  // namespace qs::cli
