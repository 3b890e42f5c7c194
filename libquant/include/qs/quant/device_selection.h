#pragma once
// Where a quantize job's transforms run, from its --device text:
//
//   auto          the first GPU when one is usable, else the CPU (one worker)
//   cpu           the CPU, one worker (its kernels use every core through oneTBB)
//   cpu:N         N CPU workers taking items side by side (the multi-device scheduling on a
//                 machine without a GPU, for tests; each worker's kernels share the cores)
//   cuda, cuda:I  one GPU (the first, or device I)
//   cuda:I,J,...  one worker per listed GPU
//   cuda:all      one worker per GPU of the machine
//
// The output bytes are the same for any number of workers of one kind (the executor writes
// in plan order), so a job may be resumed on a different count.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "qs/quant/cuda_availability.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

struct DeviceSelection {
  ComputeDevice device = ComputeDevice::Cpu;  // Cpu or Cuda: auto is resolved
  std::vector<int> cuda_devices;              // one worker each, when device is Cuda
  std::size_t cpu_workers = 1;                // when device is Cpu

  std::size_t worker_count() const;
  // The canonical text: "cpu", "cpu:4", "cuda:0", "cuda:0,1".
  std::string describe() const;
};

// Throws BadInput "cli.bad_device" for text of no form above (empty list entries, a device
// listed twice, cpu:0), "cuda.unavailable" for a CUDA form when `cuda` is not usable,
// "device.not_found" for an index the machine lacks, and "device.mixed_models" for GPUs of
// different models (their GPTQ results could differ in the last bits, breaking the promise
// that the worker count does not change the output). Nothing here touches a device.
DeviceSelection parse_device_selection(std::string_view text, const CudaAvailability& cuda);

}  // namespace qs
