#pragma once
// The splice planner: output modules chosen from several checkpoints by rules, each carried
// with its quantization tensors (scales, zero points, global scales), and one
// quantization_config that covers the mixture (seed 000: W8A16 attention / dense / shared /
// MTP from one checkpoint, NVFP4 routed experts from another; seed 002's MTP part: the BF16
// MTP layer put back into a quantized checkpoint).
//
// A unit of the splice is a module: every tensor whose name is `module.<parameter>` moves
// together, so a weight never arrives without its companions. The output holds the base's
// modules plus those a take rule selects from its source; each module comes from the source
// of the first take rule that matches it, else from the base. Nothing is requantized: bytes
// are copied, except NVFP4 modules whose layout (modelopt or compressed-tensors) differs
// from the output's, which go through a layout conversion transform (codes and block scales
// unchanged, the global scale inverted).
//
// Everything that cannot work is refused here, before any byte is written:
//   splice.config_mismatch     sources with different architectures (model_type, hidden size,
//                              layer / expert counts, vocabulary, ...)
//   splice.missing_module      a rule takes a module from a source that lacks it
//   splice.shape_mismatch      a module whose weight shape differs between the source it is
//                              taken from and the base
//   splice.fused_split         members of an engine-fused module (q_a/kv_a, gate/up, one
//                              expert's gate/up, indexer wk/weights_proj) from different
//                              sources while one of them is quantized
//   splice.unsupported_layout  a module stored in a layout we cannot describe in a config
//                              (int8 / fp8 weights, unrecognised companions)
//   splice.mixed_activations   NVFP4 modules with and without static input scales (one
//                              config cannot say both)
//   splice.format_conflict     modelopt output requested for integer modules
//   splice.rule_takes_everything  a take rule that selects every module (make its source the
//                              base instead)
// Warnings, not errors: a take rule that selects nothing, and a rule that also matches
// modules an earlier rule takes from another source (first match wins).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/plan/recipe.h"

namespace qs {

// "SOURCE:SELECTOR" as given on the command line, taken apart. SELECTOR is a ';'-separated
// list of recipe match keys (recipe.h): category=routed_expert,shared_expert; role=expert.gate;
// module=<name pattern>; layers=3-77 (a layer selector); mtp=true|false. A bare word is a
// category name, or "mtp" (the MTP layers).
struct TakeRule {
  std::string text;    // as given, for logs and errors
  std::string source;  // the checkpoint path
  RecipeRule match;    // only the match keys are used
};

// Throws BadInput "splice.bad_rule" naming the text.
TakeRule parse_take_rule(const std::string& text);

// Converts one NVFP4 module between layouts; sources in the `from` layout's tensor order,
// outputs as nvfp4_output_specs gives them (libquant implements it).
using Nvfp4LayoutConversionFactory = std::function<std::shared_ptr<const Transform>(
    OutputFormat from, OutputFormat to, bool with_input_scale)>;

struct SpliceRequest {
  const Checkpoint* base = nullptr;
  // The checkpoints the rules take from, in rule order (one per rule; the same checkpoint
  // may appear several times).
  std::vector<const Checkpoint*> rule_sources;
  std::vector<TakeRule> rules;
  // The output convention for NVFP4 and the config; nullopt: compressed-tensors when any
  // source uses it or any module is an integer one, else modelopt.
  std::optional<OutputFormat> format;
};

// Where one output module came from.
struct ModuleDecision {
  std::string module;
  std::size_t input = 0;   // index into Plan::inputs (0 = base)
  std::string rule;        // the take rule's text, or "base"
  std::string layout;      // weight_layout_name of its storage, "tensors" for non-Linears
  bool converted = false;  // NVFP4 layout converted
};

struct SplicePlan {
  Plan plan;                              // inputs: base first, then each distinct rule source
  std::vector<ModuleDecision> decisions;  // in output order
  QuantizedModel model;
  std::optional<OutputFormat> format;  // nullopt when nothing in the output is quantized
  std::vector<std::string> warnings;
  std::vector<std::size_t> modules_per_rule;  // how many modules each rule selected
};

SplicePlan plan_splice(const SpliceRequest& request,
                       const Nvfp4LayoutConversionFactory& convert_layout);

}  // namespace qs
