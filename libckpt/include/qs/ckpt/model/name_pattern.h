#pragma once
// Name patterns for recipe rules and for compressed-tensors `targets` / `ignore`, and the
// exact way vLLM decides, from those lists, whether a module is quantized
// (docs/formats/compressed-tensors.md, "Target and ignore matching"; vLLM
// compressed_tensors/utils.py and compressed_tensors.py get_scheme_dict, compressed_tensors_moe.py
// get_moe_method).
//
// Pattern syntax:
//   "re:<regex>"  a regular expression matched like Python's re.match, which is what vLLM and
//                 compressed-tensors use: anchored at the start of the name but NOT at its end
//                 ("re:.*mlp\.gate" also matches "...mlp.gate_up_proj"; write "$" to anchor).
//                 Compiled once with RE2, whose matching time is linear in the name's length
//                 whatever the pattern (no catastrophic backtracking on patterns from recipes
//                 or checkpoints). Only the syntax Python's re and RE2 read alike is accepted:
//                 Python-only or RE2-only constructs ((?P<name>...), lookbehind, inline flags,
//                 \A, \Z) are rejected rather than risk a different meaning.
//   anything else, in the Glob dialect (recipes): a shell-style wildcard matched against the
//                 whole name, as Python's fnmatch.fnmatchcase does: '*' any run of characters
//                 (dots included, so "*.mlp.gate" matches every layer's router), '?' one
//                 character, "[abc]" / "[a-z]" one of a set, "[!abc]" none of a set. No
//                 backslash escapes; write "[*]" for a literal star. Without any of those
//                 characters the glob is an exact name.
//   anything else, in the ExactName dialect (what vLLM does with compressed-tensors lists): the
//                 whole module name, compared for equality; wildcards are plain characters.
// Patterns match module names (tensor names without the parameter: "model.layers.3.mlp.gate",
// not "...mlp.gate.weight"), as vLLM's lists do; matches_tensor() strips the parameter first.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qs/ckpt/model/tensor_name.h"

namespace re2 {
class RE2;
}

namespace qs {

// What a pattern without the "re:" prefix means.
enum class PlainPatternMeaning : std::uint8_t {
  Glob,       // recipe rules
  ExactName,  // compressed-tensors targets / ignore as vLLM reads them
};

class NamePattern {
 public:
  enum class Kind : std::uint8_t { Exact, Glob, Regex };

  // Throws BadInput naming the pattern: "pattern.invalid_regex" (does not compile),
  // "pattern.python_only_regex" (syntax Python's re and RE2 do not read alike),
  // "pattern.invalid_glob" (an unterminated '[').
  static NamePattern parse(std::string_view text,
                           PlainPatternMeaning plain = PlainPatternMeaning::Glob);

  bool matches_module(std::string_view module_name) const;
  // Matches the tensor's module path: "lm_head" matches "lm_head.weight".
  bool matches_tensor(std::string_view tensor_name) const;

  const std::string& text() const { return text_; }  // as written, "re:" included
  Kind kind() const { return kind_; }

 private:
  NamePattern(std::string text, Kind kind) : text_(std::move(text)), kind_(kind) {}

  std::string text_;
  Kind kind_;
  // Shared so copies of a pattern (one per recipe rule that names it) reuse one compilation.
  std::shared_ptr<const re2::RE2> regex_;
};

// ---- vLLM's targets / ignore resolution ----

// One entry of vLLM's packed_modules_mapping: the last name component of a fused module and
// those of its shards, in shard order.
struct PackedModule {
  std::string fused;
  std::vector<std::string> shards;
};

// DeepseekV2ForCausalLM's mapping, which GLM-5 inherits (with q_lora_rank set):
// fused_qkv_a_proj = [q_a_proj, kv_a_proj_with_mqa], gate_up_proj = [gate_proj, up_proj].
std::vector<PackedModule> deepseek_packed_modules();

// A module as vLLM builds it with the quantization config.
struct VllmModule {
  // vLLM's layer prefix: model.layers.3.self_attn.fused_qkv_a_proj; for routed experts the
  // FusedMoE prefix model.layers.3.mlp.experts.
  std::string name;
  // The class name vLLM matches class targets against ("Linear" is a case-insensitive
  // substring of it): DeepSeekV2FusedQkvAProjLinear, ColumnParallelLinear, RowParallelLinear,
  // ReplicatedLinear, MergedColumnParallelLinear, ParallelLMHead, FusedMoE.
  std::string class_name;
  bool fused_moe = false;  // resolve with resolve_fused_moe
};

// The vLLM module a checkpoint tensor loads into, for the modules vLLM builds with the
// quantization config (vllm models/deepseek_v2.py, deepseek_mtp.py) — those a
// compressed-tensors config must target or ignore. nullopt for modules vLLM never quantizes
// (router gate, indexer wk / weights_proj, MTP eh_proj), for non-Linear tensors and Unknown.
// Both shards of a fused module give the same VllmModule.
std::optional<VllmModule> vllm_quantized_module(const ParsedTensorName& parsed);

enum class VllmDecision : std::uint8_t {
  Targeted,        // quantized with the scheme of `target`
  Ignored,         // left unquantized on purpose
  Unmatched,       // neither: older vLLM raises "Unable to find matching target", newer ones
                   // silently leave the module unquantized
  ShardsDisagree,  // shards of a fused module (or expert 0's gate/up/down) are partly ignored:
                   // vLLM raises "Found a different quantization schemes" / "All MoE
                   // projections need to have same quantization scheme" (some versions warn
                   // and treat the layer as ignored)
};

// Which step of vLLM's find_matched_target matched.
enum class TargetMatchStep : std::uint8_t {
  LayerName,    // a target equal to the name, or a "re:" target matching it
  ClassName,    // a target contained in the class name (case-insensitive) or a "re:" target
                // matching the class name
  FusedShards,  // every shard's name matched some target; the first shard's target wins
};

struct VllmResolution {
  VllmDecision decision = VllmDecision::Unmatched;
  std::optional<std::size_t> target;  // index into the targets list (Targeted only)
  std::optional<TargetMatchStep> step;
  // Per shard (FusedShards, and the three expert-0 projections of a FusedMoE): the index of
  // the target each matched, nullopt for shards that matched none or were ignored. vLLM uses
  // the first shard's target for a fused Linear without checking the others' schemes; for a
  // FusedMoE it compares the schemes and raises when they differ. Callers compare the groups
  // of these targets.
  std::vector<std::optional<std::size_t>> shard_targets;
};

// vLLM's should_ignore_layer verdict.
enum class IgnoreState : std::uint8_t { NotIgnored, Ignored, ShardsDisagree };

// targets: every config group's targets in config order, flattened (vLLM keeps them in a dict,
// so a target repeated in a later group keeps its first position but takes the later group's
// scheme); ignore: the config's ignore list. Plain strings are exact names (and, in targets
// only, class names); "re:" strings are regexes. Throws like NamePattern::parse.
class VllmTargetMatcher {
 public:
  VllmTargetMatcher(std::span<const std::string> targets, std::span<const std::string> ignore,
                    std::vector<PackedModule> packed_modules = deepseek_packed_modules());

  // vLLM's should_ignore_layer: a fused module (last component in packed_modules, name not
  // itself listed verbatim in ignore) is ignored iff all its shards' names match an ignore
  // entry; ShardsDisagree when only some do. Class names in ignore are not honoured.
  IgnoreState ignore_state(std::string_view layer_name) const;

  // get_scheme_dict for a LinearBase (or ParallelLMHead): ignore first, then
  // find_matched_target's three steps in order.
  VllmResolution resolve_linear(std::string_view layer_name, std::string_view class_name) const;

  // get_moe_method for a FusedMoE at `experts_prefix` (model.layers.3.mlp.experts): resolves
  // <prefix>.0.gate_proj, .0.up_proj, .0.down_proj as Linears of class "FusedMoE", with a
  // "Linear" target also standing for "FusedMoE" (_add_fused_moe_to_target_scheme_map).
  // Only expert 0 is consulted, as in vLLM. Targeted when all three are targeted (target =
  // down_proj's, the one vLLM keeps), Ignored when all are ignored, ShardsDisagree when some
  // are targeted and others not, Unmatched otherwise.
  VllmResolution resolve_fused_moe(std::string_view experts_prefix) const;

  VllmResolution resolve(const VllmModule& module) const;

  const std::string& target(std::size_t index) const { return targets_[index].text(); }

 private:
  bool ignore_matches(std::string_view name) const;
  std::optional<std::size_t> first_name_match(std::string_view name) const;
  std::optional<std::size_t> first_class_match(std::string_view class_name,
                                               bool fused_moe_alias) const;
  const PackedModule* packed_for_last_component(std::string_view layer_name) const;
  const PackedModule* packed_for_suffix(std::string_view layer_name) const;
  VllmResolution resolve_linear_impl(std::string_view layer_name, std::string_view class_name,
                                     bool fused_moe_alias) const;

  std::vector<NamePattern> targets_;
  std::vector<NamePattern> ignore_;
  std::vector<std::string> ignore_verbatim_;
  std::vector<PackedModule> packed_modules_;
  std::optional<std::size_t> linear_target_;  // index of a plain "Linear" target
  bool has_fused_moe_target_ = false;
};

const char* vllm_decision_name(VllmDecision decision);

}  // namespace qs
