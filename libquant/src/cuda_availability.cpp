#include "qs/quant/cuda_availability.h"

#include "qs/ckpt/core/error.h"

namespace qs {

#ifdef QS_HAVE_CUDA
CudaAvailability query_cuda_devices();  // in src/cuda/cuda_device.cu
// Asked once per process: planning asks for every quantized group, and the answer (devices and
// their names) does not change while we run.
CudaAvailability cuda_availability() {
  static const CudaAvailability devices = query_cuda_devices();
  return devices;
}
#else
CudaAvailability cuda_availability() {
  return {false, 0, "quantsmith was built without CUDA (no nvcc at configure time)", {}};
}
void use_cuda_device(int) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}
#endif

}  // namespace qs
