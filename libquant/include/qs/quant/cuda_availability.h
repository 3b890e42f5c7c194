#pragma once
// Whether a CUDA device can run our kernels here. Callers pick the CPU path (and tests skip
// their GPU cases) when it cannot, instead of failing.

#include <string>

namespace qs {

struct CudaAvailability {
  bool usable = false;
  int device_count = 0;
  std::string reason;  // why not usable, or the device name when usable
};

// False with a reason when the build has no CUDA or no device is present.
CudaAvailability cuda_availability();

}  // namespace qs
