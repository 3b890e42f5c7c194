#pragma once
// Whether a CUDA device can run our kernels here. Callers pick the CPU path (and tests skip
// their GPU cases) when it cannot, instead of failing.

#include <string>
#include <vector>

namespace qs {

struct CudaAvailability {
  bool usable = false;
  int device_count = 0;
  std::string reason;  // why not usable, or the device name when usable
  std::vector<std::string> device_names;  // of every device, by index, when usable
};

// False with a reason when the build has no CUDA or no device is present.
CudaAvailability cuda_availability();

// Makes device `index` the calling thread's CUDA device: the CUDA runtime keeps the current
// device per host thread, so the buffers, kernels (on that device's default stream) and
// cuBLAS/cuSOLVER handles this thread makes from then on live there. Throws BadInput
// "device.not_found" for an index the machine lacks, "cuda.unavailable" without CUDA.
void use_cuda_device(int index);

}  // namespace qs
