#include "weight_guard.h"

#include <fmt/format.h>

#include <cmath>

#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"

namespace qs {

std::vector<float> decode_weight(const fp4::WeightView& view) {
  std::vector<float> values(view.rows * view.cols);
  for (std::uint64_t r = 0; r < view.rows; ++r)
    fp4::detail::decode_row(view, r, values.data() + r * view.cols);
  return values;
}

std::uint64_t count_non_finite(const fp4::WeightView& view) {
  std::vector<float> row(view.cols);
  std::uint64_t count = 0;
  for (std::uint64_t r = 0; r < view.rows; ++r) {
    fp4::detail::decode_row(view, r, row.data());
    for (float value : row) count += !std::isfinite(value);
  }
  return count;
}

fp4::WeightView finite_view(const fp4::WeightView& view, const TensorInfo& info,
                            std::uint64_t non_finite, NanPolicy policy,
                            std::vector<float>& storage) {
  if (non_finite == 0) return view;
  if (policy == NanPolicy::Error)
    throw_bad_input("weight.non_finite",
                    fmt::format("{} of its {} elements are NaN or Inf; fix the source or pass "
                                "--nan-policy zero",
                                non_finite, info.element_count()),
                    {}, info.name);
  storage = decode_weight(view);
  for (float& value : storage)
    if (!std::isfinite(value)) value = 0.0f;
  return {DType::F32, std::as_bytes(std::span<const float>(storage)), view.rows, view.cols};
}

fp4::Backend backend_for(ComputeDevice device) {
  switch (device) {
    case ComputeDevice::Cpu:
      return fp4::Backend::Cpu;
    case ComputeDevice::Cuda: {
      const auto cuda = cuda_availability();
      if (!cuda.usable) throw_bad_input("cuda.unavailable", "--device cuda: " + cuda.reason);
      return fp4::Backend::Cuda;
    }
    case ComputeDevice::Auto:
      return cuda_availability().usable ? fp4::Backend::Cuda : fp4::Backend::Cpu;
  }
  return fp4::Backend::Cpu;
}

StackedWeights stack_member_weights(const std::vector<std::size_t>& members,
                                    std::span<const SourceTensor> sources, NanPolicy policy) {
  StackedWeights stacked;
  for (const std::size_t m : members) {
    const TensorInfo& info = *sources[m].info;
    const fp4::WeightView source{info.dtype, sources[m].bytes, info.shape[0], info.shape[1]};
    std::vector<float> zeroed;
    const auto view = finite_view(source, info, count_non_finite(source), policy, zeroed);
    const auto values = decode_weight(view);
    stacked.row_offsets.push_back(stacked.rows);
    stacked.values.insert(stacked.values.end(), values.begin(), values.end());
    stacked.rows += info.shape[0];
  }
  return stacked;
}

}  // namespace qs
