#pragma once
// What every quantizing transform does before the numerics: NaN and ±Inf in a weight are an
// error naming the tensor, or (--nan-policy zero) quantized as 0; and the compute backend the
// job's --device asks for.

#include <span>
#include <vector>

#include "qs/ckpt/plan/plan.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

// `view` unchanged when `non_finite` is 0; otherwise throws "weight.non_finite" (NanPolicy::
// Error) or returns an f32 copy in `storage` with those elements set to 0.
fp4::WeightView finite_view(const fp4::WeightView& view, const TensorInfo& info,
                            std::uint64_t non_finite, NanPolicy policy,
                            std::vector<float>& storage);

// NaN and ±Inf elements of a weight.
std::uint64_t count_non_finite(const fp4::WeightView& view);

// The weight decoded to f32, row-major.
std::vector<float> decode_weight(const fp4::WeightView& view);

// Several members' weights (all [rows_i, cols]) stacked as the rows of one f32 matrix, each
// through finite_view: what a GPTQ-style solver encodes at once when the members share a
// Hessian (an expert's gate_proj and up_proj). `row_offsets[i]` is member i's first row.
struct StackedWeights {
  std::vector<float> values;
  std::vector<std::uint64_t> row_offsets;
  std::uint64_t rows = 0;
};
StackedWeights stack_member_weights(const std::vector<std::size_t>& members,
                                    std::span<const SourceTensor> sources, NanPolicy policy);

fp4::Backend backend_for(ComputeDevice device);

}  // namespace qs
