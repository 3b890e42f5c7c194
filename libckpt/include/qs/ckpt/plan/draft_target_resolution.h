#pragma once
// A standalone MTP draft is served beside a target, and vLLM builds the draft with the
// *target's* quantization config: its speculative loaders call get_model() with the target's
// VllmConfig (whose quant_config was read from the target checkpoint) and the draft's model
// config, so the draft's own quantization_config is never read (vllm/v1/spec_decode/
// llm_base_proposer.py `_get_model`, vllm/v1/worker/gpu/spec_decode/eagle/utils.py
// `load_eagle_model`, vLLM 0.33). The MTP block is built under the prefix model.layers.{L}, so
// the target's config is consulted with the same module names (fused as vLLM fuses them) that
// the target's own MTP layer has.
//
// This file answers, for every Linear of a draft: what does vLLM build it as when the draft
// is paired with TARGET? `mtp extract --target` requantizes the draft to exactly that, and
// `validate DRAFT --target TARGET` reports a draft whose tensors hold anything else (vLLM
// would reject its tensors or leave parameters unfilled).
//
// Headers and config only. TARGET may be the target checkpoint's directory or only its
// config.json (with hf_quant_config.json beside it for modelopt).

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/plan/recipe.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {

// The target's quantization config as vLLM reads it.
struct TargetQuantization {
  enum class Format : std::uint8_t { None, CompressedTensors, Modelopt };
  Format format = Format::None;
  std::string file;  // the file it was read from, for messages
  CompressedTensorsConfig compressed_tensors;
  // Group names whose weights use activation ordering by groups (vLLM allocates weight_g_idx).
  std::vector<std::string> act_order_groups;
  std::string modelopt_algorithm;  // quant_algo: "W4A16_NVFP4", "NVFP4", "FP8", ...
  std::vector<std::string> modelopt_exclusions;
};

// Throws BadInput "target.unreadable" (no config.json, not JSON) or "target.unsupported" (a
// quant_method vLLM reads but we do not: fp8, gptq, awq, ...), naming the file.
TargetQuantization read_target_quantization(const std::filesystem::path& target);

// What vLLM builds one draft Linear as.
enum class DraftSchemeKind : std::uint8_t {
  Unquantized,   // BF16 weight: ignored / excluded, or built without the quantization config
  Nvfp4,         // NVFP4 weights in the target's format's layout (`activations`: W4A4)
  Integer,       // compressed-tensors pack-quantized (WNA16)
  Unproducible,  // something we cannot write (or vLLM cannot build): `problem` says what
};

struct DraftModuleScheme {
  std::string module;       // checkpoint module path (model.layers.L.self_attn.q_a_proj)
  std::string vllm_module;  // what vLLM looks the config up with; empty when it does not
  DraftSchemeKind kind = DraftSchemeKind::Unquantized;
  IntegerOptions integer;    // Integer
  bool activations = false;  // Nvfp4: static NVFP4 input scales too (W4A4)
  std::string decided_by;    // "config group group_0 (int4 asym group 32)", "ignore", ...
  std::string problem;       // Unproducible

  // "BF16", "nvfp4", "int4-g32-asym", or "cannot be produced: ..." for messages.
  std::string description() const;
};

// One row per Linear weight in `linear_weights` (tensor names of 2-D Linear weights, or of
// the modules' main tensors), in order. Members of one engine-fused unit (fused_qkv_a_proj,
// gate_up_proj, a layer's FusedMoE) that would resolve differently are all Unproducible.
std::vector<DraftModuleScheme> resolve_draft_modules(
    const TargetQuantization& target, const std::vector<std::string>& linear_weights);

// The recipe that makes each module what `schemes` says (one exact-name rule per quantized
// module, everything else kept), in the target's format; nullopt when nothing is quantized.
// Throws BadInput "mtp.target_scheme_unsupported" naming the first Unproducible module.
std::optional<Recipe> draft_recipe_for_target(const TargetQuantization& target,
                                              const std::vector<DraftModuleScheme>& schemes,
                                              const std::string& source_name);

// validate DRAFT --target TARGET: each of the draft's Linears whose tensors do not hold the
// scheme vLLM builds it with (layout, bits, symmetry, group size, activation scales).
struct DraftTargetMismatch {
  std::string module;
  std::string file;
  std::string tensor;  // the module's main tensor
  std::string message;
};
std::vector<DraftTargetMismatch> check_draft_against_target(const Checkpoint& draft,
                                                            const TargetQuantization& target);

}  // namespace qs
