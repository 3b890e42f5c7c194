#include "qs/ckpt/plan/quantize_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/fp8_block_sources.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

constexpr std::uint64_t kNvfp4BlockSize = 16;
constexpr const char* kNoRule = "no rule matched (kept)";

bool is_float_weight(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32;
}

bool quantizable_linear_weight(const ParsedTensorName& parsed, const TensorInfo& info) {
  return is_linear(parsed.role) && parsed.parameter == TensorParameter::Weight &&
         info.shape.size() == 2;
}

std::optional<DType> cast_target(RecipeAction action) {
  switch (action) {
    case RecipeAction::CastBf16:
      return DType::BF16;
    case RecipeAction::CastF16:
      return DType::F16;
    case RecipeAction::CastF32:
      return DType::F32;
    default:
      return std::nullopt;
  }
}

// `rule_index`, when given, receives the index of the deciding rule (unchanged when none).
TensorDecision decide(const ParsedTensorName& parsed, const TensorInfo& info, const Recipe& recipe,
                      const ModelLayout& layout, std::size_t* rule_index = nullptr) {
  for (std::size_t r = 0; r < recipe.rules.size(); ++r) {
    const RecipeRule& rule = recipe.rules[r];
    if (!rule.matches(parsed, layout)) continue;
    if (is_quantizing(rule.action) && !quantizable_linear_weight(parsed, info)) continue;
    if (rule_index) *rule_index = r;
    TensorDecision decision{info.name, rule.action, {}, {}, rule.name};
    if (is_nvfp4(rule.action))
      decision.scale_method = rule.scale_method.empty() ? recipe.scale_method : rule.scale_method;
    // nvfp4-gptq and vq take GPTQ's damp / act_order / min_tokens, nvfp4's hessian method damp.
    if (is_integer(rule.action) || is_nvfp4(rule.action) || rule.action == RecipeAction::Vq)
      decision.integer = rule.integer;
    if (rule.action == RecipeAction::Vq) decision.vq = rule.vq;
    return decision;
  }
  return {info.name, RecipeAction::Keep, {}, {}, kNoRule};
}

// A Linear weight with no output rows or no input features holds no layer: quantizing it
// would write scales of zero size, copying it a checkpoint no engine loads. Whatever the rule.
void check_linear_not_empty(const ParsedTensorName& parsed, const TensorLocation& location) {
  const TensorInfo& info = *location.info;
  if (!is_linear(parsed.role) || parsed.parameter != TensorParameter::Weight) return;
  if (info.element_count() > 0) return;
  const bool no_rows = !info.shape.empty() && info.shape[0] == 0;
  throw_bad_input(
      "plan.empty_linear",
      fmt::format("Linear weight of shape {} has no {}; the source is broken",
                  shape_to_string(info.shape), no_rows ? "output rows" : "input features"),
      location.shard->path().string(), info.name);
}

// Every tier a VQ decision may get must fit the Linear's inputs: the scale group (128) and
// the tier's d divide them.
void check_vq_shape(const TensorDecision& decision, const TensorInfo& info,
                    const std::string& file) {
  const std::uint64_t cols = info.shape[1];
  std::vector<VqTier> tiers = decision.vq.tiers;
  if (decision.vq_tier) tiers = {*decision.vq_tier};
  for (const auto& tier : tiers) {
    if (cols % kVqScaleGroup != 0 || cols % tier.d != 0)
      throw_bad_input("plan.vq_shape",
                      fmt::format("rule '{}' vector-quantizes it with tier {} (d {}), but its "
                                  "in-features {} are not a multiple of {}",
                                  decision.rule, tier.name, tier.d, cols,
                                  cols % kVqScaleGroup != 0 ? kVqScaleGroup : tier.d),
                      file, info.name);
    if (auto problem = vq_tier_problem(tier, cols); !problem.empty())
      throw_bad_input("plan.vq_shape", fmt::format("rule '{}': {}", decision.rule, problem), file,
                      info.name);
  }
}

void check_quantizable(const TensorDecision& decision, const TensorInfo& info,
                       const TensorLocation& location, OutputFormat format) {
  const std::string file = location.shard->path().string();
  if (decision.action == RecipeAction::Vq) {
    if (format != OutputFormat::CompressedTensors)
      throw_bad_input("plan.unsupported_format",
                      fmt::format("rule '{}' vector-quantizes it; VQ checkpoints are declared "
                                  "beside compressed-tensors groups (docs/formats/vq.md): use "
                                  "format: compressed-tensors (or --format compressed-tensors)",
                                  decision.rule),
                      file, info.name);
    check_vq_shape(decision, info, file);
  }
  if (is_integer(decision.action)) {
    if (format != OutputFormat::CompressedTensors)
      throw_bad_input("plan.unsupported_format",
                      fmt::format("rule '{}' quantizes it to integers, which are written as "
                                  "compressed-tensors pack-quantized; use format: "
                                  "compressed-tensors (or --format compressed-tensors)",
                                  decision.rule),
                      file, info.name);
    const auto group = decision.integer.group_size;
    if (group != kChannelGroup && info.shape[1] % static_cast<std::uint64_t>(group) != 0)
      throw_bad_input("plan.group_size",
                      fmt::format("rule '{}' quantizes it with group size {}, but its in-features "
                                  "{} are not a multiple of it",
                                  decision.rule, group, info.shape[1]),
                      file, info.name);
  }
  if (!is_float_weight(info.dtype))
    throw_bad_input("plan.unsupported_dtype",
                    fmt::format("rule '{}' quantizes it, but its dtype is {} (needs BF16, F16 "
                                "or F32)",
                                decision.rule, dtype_name(info.dtype)),
                    file, info.name);
  if (is_nvfp4(decision.action) && info.shape[1] % kNvfp4BlockSize != 0)
    throw_bad_input("plan.group_size",
                    fmt::format("rule '{}' quantizes it to NVFP4, but its in-features {} are not "
                                "a multiple of {}",
                                decision.rule, info.shape[1], kNvfp4BlockSize),
                    file, info.name);
}

// The stored format a quantizing action writes under the recipe's config convention.
const WeightFormat& output_format(RecipeAction action, OutputFormat format) {
  if (action == RecipeAction::Fp8Block) return weight_format(WeightLayout::Fp8Block);
  if (action == RecipeAction::Vq) return weight_format(WeightLayout::Vq);
  return is_nvfp4(action) ? weight_format_for(CodeFamily::Nvfp4, format)
                                       : weight_format(WeightLayout::PackQuantized);
}

}  // namespace

std::string scheme_label(const TensorDecision& decision) {
  switch (decision.action) {
    case RecipeAction::Nvfp4:
      return "nvfp4/" + decision.scale_method;
    case RecipeAction::Nvfp4Gptq:
      return "nvfp4-gptq/" + decision.scale_method;
    case RecipeAction::Int:
      return decision.integer.label() +
             (decision.integer.observer == "minmax" ? "" : "/" + decision.integer.observer);
    case RecipeAction::Gptq:
      return "gptq/" + decision.integer.label();
    case RecipeAction::Fp8Block:
      return "fp8-block";
    case RecipeAction::Vq:
      return "vq/" + (decision.vq_tier ? decision.vq_tier->name : decision.vq.label());
    default:
      return recipe_action_name(decision.action);
  }
}

namespace {

// GPTQ (integer or NVFP4) and the hessian scale method need every member's Hessian, of the
// member's width. Routed experts the router never picked have no statistics under routed
// calibration; GPTQ rounds them to nearest (counted), the hessian method sweeps them as
// fp8-sweep does.
void check_hessian_available(const std::string& module, const TensorLocation& location,
                             const CalibrationStatistics& calibration) {
  const auto in_features = calibration.promised_in_features(module);
  if (!in_features) {
    if (parse_tensor_name(module + ".weight").expert) return;
    throw_bad_input("calibration.missing_module",
                    "no calibration statistics for this module; calibrate the same model",
                    location.shard->path().string(), location.info->name);
  }
  if (*in_features != location.info->shape[1])
    throw_bad_input("calibration.shape_mismatch",
                    fmt::format("the statistics are for {} in-features, the weight has {}; were "
                                "they calibrated on another model?",
                                *in_features, location.info->shape[1]),
                    location.shard->path().string(), location.info->name);
}

// The config group of an integer decision: one per distinct numerics.
IntegerModules& integer_group(QuantizedModel& model, const TensorDecision& decision) {
  const bool gptq = decision.action == RecipeAction::Gptq;
  for (auto& group : model.integer_groups)
    if (group.options == decision.integer && group.gptq == gptq) return group;
  model.integer_groups.push_back({decision.integer, gptq, {}});
  return model.integer_groups.back();
}

// The input amax an NVFP4 module's activations are scaled from (see plan_quantization).
float input_amax_for(const std::string& module, const CalibrationStore& calibration) {
  const auto parsed = parse_tensor_name(module + ".weight");
  if (parsed.expert) {
    // Every expert of the layer with the same projection input: gate/up share one, down its own.
    const bool down = parsed.role == TensorRole::ExpertDown;
    const std::string prefix = module.substr(0, module.rfind(".experts.") + 9);
    double amax = 0.0;
    for (const auto& entry : calibration.entries()) {
      if (!entry.module.starts_with(prefix)) continue;
      const bool entry_down = entry.module.ends_with(".down_proj");
      const bool entry_gate_up =
          entry.module.ends_with(".gate_proj") || entry.module.ends_with(".up_proj");
      if ((down && entry_down) || (!down && entry_gate_up)) amax = std::max(amax, entry.input_amax);
    }
    if (amax > 0.0) return static_cast<float>(amax);
  } else if (const auto* entry = calibration.find(module); entry && entry->input_amax > 0.0) {
    return static_cast<float>(entry->input_amax);
  }
  throw_bad_input("calibration.missing_module",
                  "no activation statistics for this module; calibrate the same model", {}, module);
}

// One item per codebook tensor the plan's VQ modules index, after every other item: no
// sources, its values written in the codebook's dtype.
void append_vq_codebook_items(const Checkpoint& source, const VqAssignment& vq,
                              QuantizePlan& result) {
  std::set<std::string> used;
  for (const auto& module : result.model.vq_modules) used.insert(module.codebook);
  for (const auto& name : used) {
    const VqCodebook& codebook = vq.codebooks.at(name);
    if (const auto clash = source.find(name))
      throw_bad_input("plan.vq_codebook_clash",
                      fmt::format("the source already has a tensor named like the codebook of "
                                  "tier {}",
                                  codebook.tier.name),
                      clash->shard->path().string(), name);
    PlanItem item;
    item.outputs.push_back({name, codebook.dtype, {codebook.tier.k, codebook.tier.d}});
    item.transform = make_vq_codebook_transform(&codebook);
    item.scheme = "vq-codebook/" + codebook.tier.name;
    item.decided_by = "vq codebook";
    result.plan.items.push_back(std::move(item));
  }
}

// Decoder-layer items in layer order, every other item where it was (see plan_quantization).
void order_items_by_layer(std::vector<PlanItem>& items) {
  std::vector<std::size_t> slots;
  std::vector<std::pair<std::uint32_t, std::size_t>> layer_items;
  for (std::size_t i = 0; i < items.size(); ++i)
    if (const auto layer = item_layer(items[i])) {
      slots.push_back(i);
      layer_items.emplace_back(*layer, i);
    }
  std::stable_sort(layer_items.begin(), layer_items.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<PlanItem> ordered;
  ordered.reserve(items.size());
  std::size_t next_layer_item = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const bool slot = next_layer_item < slots.size() && slots[next_layer_item] == i;
    ordered.push_back(std::move(slot ? items[layer_items[next_layer_item++].second] : items[i]));
  }
  items = std::move(ordered);
}

}  // namespace

bool reads_statistics(const TensorDecision& decision) {
  return needs_statistics(decision.action, decision.scale_method, &decision.vq);
}

bool needs_calibration_statistics(const Recipe& recipe) {
  return std::any_of(recipe.rules.begin(), recipe.rules.end(), [&](const RecipeRule& rule) {
    return needs_statistics(rule.action,
                            rule.scale_method.empty() ? recipe.scale_method : rule.scale_method,
                            &rule.vq);
  });
}

std::string vq_codebook_tensor(const VqTier& tier, VqCodebookScope scope,
                               std::optional<std::uint32_t> layer) {
  if (scope == VqCodebookScope::Layer && layer)
    return fmt::format("model.layers.{}.mlp.experts.vq_codebooks.{}", *layer, tier.name);
  return "vq_codebooks." + tier.name;
}

namespace {

class VqCodebookTransform final : public Transform {
 public:
  explicit VqCodebookTransform(const VqCodebook* codebook) : codebook_(codebook) {}
  std::string describe() const override {
    return fmt::format("vq-codebook({}, {})", codebook_->tier.name, dtype_name(codebook_->dtype));
  }
  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    const auto& values = codebook_->codewords;
    if (!sources.empty() || outputs.size() != 1 ||
        outputs[0].size() != values.size() * dtype_bits(codebook_->dtype) / 8)
      throw Error(ErrorClass::Internal, "plan.vq_codebook_shape",
                  "a codebook item has no sources and one output of K × d values");
    encode_from_f32(codebook_->dtype, values, outputs[0]);
    return {};
  }

 private:
  const VqCodebook* codebook_;
};

// The engine-fused group `parsed` belongs to (gate_proj and up_proj of one expert: its
// gate_up_proj), or its own module path when engines keep it alone.
std::string vq_tie_key(const ParsedTensorName& parsed) {
  if (const auto group = fused_group(parsed)) return group->name;
  return parsed.module_path;
}

}  // namespace

std::shared_ptr<const Transform> make_vq_codebook_transform(const VqCodebook* codebook) {
  if (!codebook || codebook->codewords.size() !=
                       static_cast<std::size_t>(codebook->tier.k) * codebook->tier.d)
    throw Error(ErrorClass::Internal, "plan.vq_codebook_shape",
                "a codebook needs K × d values");
  if (codebook->dtype != DType::F16 && codebook->dtype != DType::BF16)
    throw Error(ErrorClass::Internal, "plan.vq_codebook_dtype", "codebooks are F16 or BF16");
  return std::make_shared<VqCodebookTransform>(codebook);
}

namespace {

// The model's layer counts, which rules' layer selectors and the MTP test need.
ModelLayout required_model_layout(const Checkpoint& source) {
  const auto layout = model_layout_from_config(source.config());
  if (!layout)
    throw_bad_input("config.missing_key",
                    "config.json is missing or lacks num_hidden_layers; quantize needs it to "
                    "tell MTP and boundary layers apart",
                    (source.directory() / "config.json").string());
  return *layout;
}

}  // namespace

std::vector<VqCandidate> vq_candidates(const Checkpoint& source, const Recipe& recipe) {
  const ModelLayout layout = required_model_layout(source);
  std::vector<VqCandidate> candidates;
  for (const auto& location : source.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    TensorInfo info = *location.info;
    // FP8 block-scaled sources are read as BF16 (plan_quantization does the same).
    if (info.dtype == DType::F8_E4M3 && parsed.parameter == TensorParameter::Weight)
      info.dtype = DType::BF16;
    if (!is_linear(parsed.role) || parsed.parameter != TensorParameter::Weight ||
        info.shape.size() != 2)
      continue;
    std::size_t rule_index = 0;
    const auto decision = decide(parsed, info, recipe, layout, &rule_index);
    if (decision.action != RecipeAction::Vq) continue;
    check_quantizable(decision, info, location, recipe.format);
    VqCandidate candidate;
    candidate.module = parsed.module_path;
    candidate.tensor = info.name;
    candidate.rows = info.shape[0];
    candidate.cols = info.shape[1];
    candidate.dtype = info.dtype;
    candidate.layer = parsed.layer;
    candidate.expert = parsed.expert;
    candidate.rule = decision.rule;
    candidate.rule_index = rule_index;
    candidate.options = decision.vq;
    candidate.pinned = decision.vq.pinned();
    candidate.tie = vq_tie_key(parsed);
    candidates.push_back(std::move(candidate));
  }
  return candidates;
}

std::optional<std::uint32_t> item_layer(const PlanItem& item) {
  if (item.sources.empty()) return std::nullopt;
  return parse_tensor_name(item.sources[0].info->name).layer;
}

QuantizePlan plan_quantization(const Checkpoint& source, const Recipe& recipe,
                               const QuantizeTransformFactory& make_quantizer,
                               const CalibrationStatistics* calibration,
                               const VqAssignment* vq) {
  const auto* statistics_file = dynamic_cast<const CalibrationStore*>(calibration);
  // VQ decides tiers and fits codebooks before the first byte is written, from every layer's
  // statistics at once: the layer-pipelined flow (--calib-tokens) only has a layer's
  // statistics when its turn comes, so it cannot plan VQ.
  for (const auto& rule : recipe.rules)
    if (rule.action == RecipeAction::Vq && needs_statistics(rule.vq) && !statistics_file)
      throw_bad_input("plan.vq_needs_statistics",
                      fmt::format("rule '{}' (vq, {}{}) needs calibration statistics at plan "
                                  "time: tier allocation and codebook fitting read every "
                                  "layer's statistics before encoding, which the one-command "
                                  "--calib-tokens flow only has layer by layer; run quantsmith "
                                  "calibrate and pass --calib STATS",
                                  rule.name,
                                  rule.vq.compensation == VqCompensation::Gptq
                                      ? "gptq compensation"
                                      : "no compensation",
                                  rule.vq.allocated() ? ", several tiers" : ""),
                      recipe.source);
  const auto needing =
      std::find_if(recipe.rules.begin(), recipe.rules.end(), [&](const auto& rule) {
        return needs_statistics(rule.action,
                                rule.scale_method.empty() ? recipe.scale_method
                                                          : rule.scale_method,
                                &rule.vq);
      });
  if (needing != recipe.rules.end() && !calibration)
    throw_bad_input("plan.needs_calibration",
                    fmt::format("rule '{}' ({}{}) needs calibration statistics: pass "
                                "--calib-tokens FILE (calibrate layer by layer in this job) or "
                                "--calib STATS (from quantsmith calibrate)",
                                needing->name, recipe_action_name(needing->action),
                                is_nvfp4(needing->action)
                                    ? ", scale method " + (needing->scale_method.empty()
                                                               ? recipe.scale_method
                                                               : needing->scale_method)
                                    : std::string()),
                    recipe.source);
  if (recipe.quantize_activations && !statistics_file)
    throw_bad_input("plan.needs_calibration",
                    calibration ? "NVFP4 activations (W4A4) take their input ranges at plan "
                                  "time, from a statistics file: run quantsmith calibrate and "
                                  "pass --calib STATS (--calib-tokens does not give them)"
                                : "NVFP4 activations (W4A4) need calibrated input ranges: run "
                                  "quantsmith calibrate and pass --calib STATS",
                    recipe.source);
  const ModelLayout layout = required_model_layout(source);

  QuantizePlan result;
  result.plan.inputs = {&source};
  // FP8 block-scaled Linears (DeepSeek-V3) are read as the BF16 weights they decode to: their
  // weight_scale_inv travels with the weight, and rules see a BF16 Linear.
  const auto fp8_modules = fp8_block_modules(source);
  std::set<std::string, std::less<>> fp8_scales;
  for (const auto& [module, weight] : fp8_modules) fp8_scales.insert(weight.sources[1].info->name);
  auto logical_info = [&](const TensorLocation& location) {
    TensorInfo info = *location.info;
    const auto parsed = parse_tensor_name(info.name);
    if (parsed.parameter == TensorParameter::Weight && fp8_modules.contains(parsed.module_path))
      info.dtype = DType::BF16;
    return info;
  };
  std::map<std::string, std::size_t, std::less<>> decision_of;
  for (const auto& location : source.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    if (fp8_scales.contains(location.info->name)) continue;
    if (is_quantization_companion(parsed.parameter))
      throw_bad_input("quantize.source_quantized",
                      fmt::format("the source is already quantized ({} is a {} tensor); "
                                  "quantize needs a float checkpoint",
                                  location.info->name, parameter_name(parsed.parameter)),
                      location.shard->path().string(), location.info->name);
    check_linear_not_empty(parsed, location);
    const TensorInfo info = logical_info(location);
    auto decision = decide(parsed, info, recipe, layout);
    if (decision.action == RecipeAction::Vq) {
      const VqTier* tier = nullptr;
      if (vq && vq->codebook_of.contains(parsed.module_path) &&
          vq->codebooks.contains(vq->codebook_of.at(parsed.module_path)))
        if (const auto found = vq->tier_of.find(parsed.module_path); found != vq->tier_of.end())
          tier = &found->second;
      if (!tier)
        throw Error(ErrorClass::Internal, "plan.vq_unassigned",
                    fmt::format("rule '{}' vector-quantizes {}, but the VQ assignment gives it "
                                "no tier and codebook",
                                decision.rule, parsed.module_path));
      decision.vq_tier = *tier;
    }
    if (is_quantizing(decision.action)) check_quantizable(decision, info, location, recipe.format);
    if (reads_statistics(decision))
      check_hessian_available(parsed.module_path, location, *calibration);
    if (const auto target = cast_target(decision.action); target && !is_float_weight(info.dtype))
      throw_bad_input("plan.uncastable_dtype",
                      fmt::format("rule '{}' casts it to {}, but it is {}", decision.rule,
                                  dtype_name(*target), dtype_name(location.info->dtype)),
                      location.shard->path().string(), location.info->name);
    decision_of[location.info->name] = result.decisions.size();
    result.decisions.push_back(std::move(decision));
  }

  // Members of an engine-fused group must agree; a quantized group becomes one item.
  std::set<std::string> consumed;
  auto source_ref = [&](const TensorLocation& location) {
    return SourceRef{0, location.shard, location.info};
  };
  // An FP8 member's sources are its weight and weight_scale_inv, decoded before anything else.
  auto encoded = [&](const TensorLocation& member) -> std::optional<DequantizeRequest> {
    const auto found = fp8_modules.find(parse_tensor_name(member.info->name).module_path);
    if (found == fp8_modules.end() || found->second.sources[0].info != member.info)
      return std::nullopt;
    return found->second.request;
  };
  auto add_sources = [&](PlanItem& item, const TensorLocation& member) {
    item.sources.push_back(source_ref(member));
    if (encoded(member))
      item.sources.push_back(
          source_ref(fp8_modules.at(parse_tensor_name(member.info->name).module_path).sources[1]));
  };
  for (const auto& location : source.tensors()) {
    const std::string& name = location.info->name;
    if (consumed.contains(name) || fp8_scales.contains(name)) continue;
    const TensorDecision& decision = result.decisions[decision_of.at(name)];
    const auto parsed = parse_tensor_name(name);
    std::vector<TensorLocation> members{location};
    if (const auto group = fused_group(parsed);
        group && parsed.parameter == TensorParameter::Weight) {
      for (std::size_t m = 0; m < group->members.size(); ++m) {
        if (m == group->member_index) continue;
        const std::string member_name = group->members[m] + ".weight";
        const auto member = source.find(member_name);
        if (!member) {
          if (is_quantizing(decision.action))
            throw_bad_input("plan.missing_fused_member",
                            fmt::format("{} is fused with {} by engines, which the checkpoint "
                                        "lacks; both must be quantized together",
                                        name, member_name),
                            location.shard->path().string(), name);
          continue;
        }
        const TensorDecision& other = result.decisions[decision_of.at(member_name)];
        // Float members may differ (GLM-5 keeps indexer weights_proj in F32 beside a BF16
        // wk); a quantized member needs its partner in the same scheme and global scale.
        const bool quantized = is_quantizing(decision.action) || is_quantizing(other.action);
        if (quantized && scheme_label(other) != scheme_label(decision))
          throw_bad_input(
              "plan.fused_split",
              fmt::format("engines fuse {} and {} into {}, but rule '{}' makes the first {} "
                          "and rule '{}' makes the second {}; they need the same scheme",
                          name, member_name, group->name, decision.rule, scheme_label(decision),
                          other.rule, scheme_label(other)),
              location.shard->path().string(), name);
        if (is_quantizing(decision.action)) members.push_back(*member);
      }
    }

    PlanItem item;
    item.scheme = scheme_label(decision);
    item.decided_by = decision.rule;
    if (is_quantizing(decision.action)) {
      std::vector<float> input_amax;
      std::vector<std::optional<DequantizeRequest>> encoded_members;
      for (const auto& member : members) {
        consumed.insert(member.info->name);
        add_sources(item, member);
        encoded_members.push_back(encoded(member));
        const auto module = parse_tensor_name(member.info->name).module_path;
        const auto& shape = member.info->shape;
        auto specs = output_format(decision.action, recipe.format)
                         .output_specs(module, shape[0], shape[1],
                                       {logical_info(member).dtype, decision.integer,
                                        recipe.quantize_activations, decision.vq_tier});
        for (auto& spec : specs) item.outputs.push_back(std::move(spec));
        if (decision.action == RecipeAction::Vq) {
          result.model.vq_modules.push_back(
              {module, *decision.vq_tier, vq->codebook_of.at(module)});
        } else if (decision.action == RecipeAction::Fp8Block) {
          result.model.fp8_block_modules.push_back(module);
        } else if (is_nvfp4(decision.action)) {
          result.model.nvfp4_modules.push_back(module);
          if (recipe.quantize_activations)
            input_amax.push_back(input_amax_for(module, *statistics_file));
        } else {
          integer_group(result.model, decision).modules.push_back(module);
        }
      }
      // Engines fuse the members into one GEMM with one input scale: the group's max.
      if (!input_amax.empty())
        input_amax.assign(input_amax.size(),
                          *std::max_element(input_amax.begin(), input_amax.end()));
      QuantizeRequest request{decision.action, recipe.format, decision.scale_method, members.size(),
                              std::move(input_amax)};
      request.integer = decision.integer;
      request.calibration = calibration;
      if (decision.action == RecipeAction::Vq) {
        request.vq_tier = decision.vq_tier;
        request.vq = decision.vq;
        const auto& codebook = vq->codebook_of.at(parse_tensor_name(name).module_path);
        request.vq_codebook = &vq->codebooks.at(codebook);
        for (const auto& member : members)
          if (vq->codebook_of.at(parse_tensor_name(member.info->name).module_path) != codebook)
            throw Error(ErrorClass::Internal, "plan.vq_unassigned",
                        fmt::format("the fused members of {} index different codebooks", name));
      }
      if (std::any_of(encoded_members.begin(), encoded_members.end(),
                      [](const auto& member) { return member.has_value(); }))
        request.encoded_members = std::move(encoded_members);
      item.transform = make_quantizer(request);
    } else if (auto fp8 = encoded(location)) {
      // Kept or cast: decoded to the BF16 the weights are (or the cast's dtype), scale dropped.
      consumed.insert(name);
      add_sources(item, location);
      fp8->dtype = cast_target(decision.action).value_or(DType::BF16);
      item.outputs.push_back({name, fp8->dtype, location.info->shape});
      QuantizeRequest request;
      request.action = decision.action;
      request.encoded_members = {fp8};
      item.transform = make_quantizer(request);
      item.scheme = fmt::format("{} (from fp8-block)", dtype_name(fp8->dtype));
      if (quantizable_linear_weight(parsed, *location.info))
        result.model.unquantized_linears.push_back(parsed.module_path);
    } else {
      consumed.insert(name);
      item.sources.push_back(source_ref(location));
      const auto target = cast_target(decision.action);
      item.outputs.push_back({name, target.value_or(location.info->dtype), location.info->shape});
      item.transform = target && *target != location.info->dtype ? make_cast_transform(*target)
                                                                 : make_copy_transform();
      if (quantizable_linear_weight(parsed, *location.info))
        result.model.unquantized_linears.push_back(parsed.module_path);
    }
    result.plan.items.push_back(std::move(item));
  }
  if (vq) append_vq_codebook_items(source, *vq, result);
  if (!result.model.fp8_block_modules.empty() &&
      quantized_linear_count(result.model) != result.model.fp8_block_modules.size())
    throw_bad_input("plan.mixed_formats",
                    "the recipe writes fp8-block beside other quantization schemes; one "
                    "checkpoint's config declares FP8 block-scaled weights alone (quant_method "
                    "fp8): use fp8-block for every quantized Linear",
                    recipe.source);
  if (std::any_of(result.decisions.begin(), result.decisions.end(), reads_statistics))
    order_items_by_layer(result.plan.items);
  result.model.kv_cache_quant_algo = recipe.kv_cache;
  result.model.activations_quantized = recipe.quantize_activations;
  return result;
}

}  // namespace qs
