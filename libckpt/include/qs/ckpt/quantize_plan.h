#pragma once
// The quantize planner: recipe + source checkpoint headers → Plan, the per-tensor decision
// log, and what the output configs must say. Reads no tensor data. Everything a rule cannot
// do is an error here, before any byte is written: a quantizing rule on a shape that does not
// divide the block size, on a non-float dtype, or splitting an engine-fused pair across
// schemes or scale methods; a source that is already quantized.
//
// The math is not here (libckpt has none): the caller passes a factory that makes the
// quantizing transforms (libquant implements them).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qs/ckpt/checkpoint.h"
#include "qs/ckpt/plan.h"
#include "qs/ckpt/quantization_config.h"
#include "qs/ckpt/recipe.h"

namespace qs {

// What a quantizing transform is asked to do for one plan item: quantize `member_count`
// weights (the members of one fused group, or one lone Linear) with one shared global scale,
// writing per member the tensors of nvfp4_output_specs in that order.
struct QuantizeRequest {
  RecipeAction action = RecipeAction::Nvfp4;
  OutputFormat format = OutputFormat::Modelopt;
  std::string scale_method;
  std::size_t member_count = 1;
};
using QuantizeTransformFactory =
    std::function<std::shared_ptr<const Transform>(const QuantizeRequest&)>;

// One line of the decision log.
struct TensorDecision {
  std::string tensor;
  RecipeAction action = RecipeAction::Keep;
  std::string scale_method;  // quantizing actions only
  std::string rule;          // the rule's name, or "no rule matched (kept)"
};

struct QuantizePlan {
  Plan plan;
  std::vector<TensorDecision> decisions;  // one per source tensor, in source order
  QuantizedModel model;
};

// The tensors an NVFP4 Linear `module` with weight shape [rows, cols] becomes.
//  modelopt:           weight U8 [rows, cols/2], weight_scale F8_E4M3 [rows, cols/16],
//                      weight_scale_2 F32 []
//  compressed-tensors: weight_packed U8 [rows, cols/2], weight_scale F8_E4M3
//                      [rows, cols/16], weight_global_scale F32 [1]
std::vector<TensorSpec> nvfp4_output_specs(const std::string& module, std::uint64_t rows,
                                           std::uint64_t cols, OutputFormat format);

QuantizePlan plan_quantization(const Checkpoint& source, const Recipe& recipe,
                               const QuantizeTransformFactory& make_quantizer);

}  // namespace qs
