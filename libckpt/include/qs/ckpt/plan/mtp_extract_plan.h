#pragma once
// The `mtp extract` planner: the MTP layer(s) of a checkpoint (model.layers.L.* for
// L = num_hidden_layers .. + num_nextn_predict_layers − 1) as a standalone draft checkpoint in
// the layout vLLM's DeepSeekMTP loader reads (docs/models/glm_moe_dsa.md, "vLLM loading"): tensor
// names unchanged, the config.json of the source (same structure), every quantized Linear
// dequantized to BF16, so the draft can be requantized to whatever scheme the serving target uses
// (seed 003: NVFP4 → INT4 group 32). Headers and config only; the math is the caller's factory
// (libquant).
//
// Refused before any byte is written: a source without MTP layers ("mtp.no_mtp_layer"), a
// quantized layout we cannot decode ("mtp.unsupported_layout").

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/formats/vq_declaration.h"

namespace qs {

using DequantizeTransformFactory =
    std::function<std::shared_ptr<const Transform>(const DequantizeRequest&)>;

struct MtpExtractOptions {
  // Also write the main model's head and embedding as the draft's own
  // (model.layers.L.shared_head.head.weight, model.layers.L.embed_tokens.weight), for loaders
  // that do not share them from the target.
  bool with_head = false;
};

struct MtpExtractPlan {
  Plan plan;
  std::uint32_t first_layer = 0;  // num_hidden_layers
  std::uint32_t layer_count = 0;  // num_nextn_predict_layers
  std::vector<std::string> dequantized_modules;
  std::size_t copied_tensors = 0;
  nlohmann::json config;  // the draft's config.json (no quantization_config)
};

MtpExtractPlan plan_mtp_extract(const Checkpoint& source, const MtpExtractOptions& options,
                                const DequantizeTransformFactory& make_dequantizer);

}  // namespace qs
