#include "qs/ckpt/plan/splice_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/packed_int32.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

// The config.json keys that make two checkpoints the same architecture: a module taken from
// one must fit the other's tensors and the runtime's expectations.
constexpr const char* kArchitectureKeys[] = {"model_type",          "hidden_size",
                                             "num_hidden_layers",   "vocab_size",
                                             "intermediate_size",   "moe_intermediate_size",
                                             "n_routed_experts",    "n_shared_experts",
                                             "num_experts_per_tok", "num_attention_heads",
                                             "q_lora_rank",         "kv_lora_rank",
                                             "qk_nope_head_dim",    "qk_rope_head_dim",
                                             "v_head_dim",          "first_k_dense_replace",
                                             "moe_layer_freq",      "num_nextn_predict_layers",
                                             "index_head_dim",      "index_n_heads",
                                             "index_topk"};

std::string source_name(const Checkpoint& checkpoint) { return checkpoint.directory().string(); }

void check_same_architecture(const Checkpoint& base, const Checkpoint& other) {
  const auto& a = base.config();
  const auto& b = other.config();
  for (const char* key : kArchitectureKeys) {
    const bool in_a = a.is_object() && a.contains(key);
    const bool in_b = b.is_object() && b.contains(key);
    if (!in_a && !in_b) continue;
    if (in_a && in_b && a[key] == b[key]) continue;
    throw Error(ErrorClass::BadInput, "splice.config_mismatch",
                fmt::format("config.json {} is {} in {} but {} here: the sources must be the same "
                            "architecture{}",
                            key, in_a ? a[key].dump() : "absent", source_name(base),
                            in_b ? b[key].dump() : "absent",
                            std::string_view(key) == "vocab_size" ? " and vocabulary" : ""),
                (other.directory() / "config.json").string());
  }
}

// One source's modules, with the order they first appear in its tensor list.
struct SourceModules {
  const Checkpoint* checkpoint = nullptr;
  std::size_t input = 0;  // index into Plan::inputs
  std::map<std::string, ModuleParameters> modules;
  std::vector<std::string> order;
  std::unordered_map<const TensorInfo*, std::size_t> position;  // in the tensor list
  std::optional<CompressedTensorsConfig> config;  // its compressed-tensors config, if any
  VqDeclaration vq;  // its VQ modules' tiers and codebooks (docs/formats/vq.md)
  std::set<std::string> codebooks;  // the codebook tensors `vq` names: not modules
};

SourceModules index_modules(const Checkpoint& checkpoint, std::size_t input) {
  SourceModules indexed{&checkpoint, input, modules_of(checkpoint), {}, {}, std::nullopt, {}, {}};
  try {
    indexed.vq = VqDeclaration::of(checkpoint);
  } catch (const Error& error) {
    throw Error(ErrorClass::BadInput, "splice.config_mismatch", error.detail(), error.file(),
                error.tensor());
  }
  for (const auto& [module, declared] : indexed.vq.modules())
    indexed.codebooks.insert(declared.codebook);
  const auto& config = checkpoint.config();
  if (config.is_object() && config.contains("quantization_config") &&
      config["quantization_config"].value("quant_method", "") == "compressed-tensors") {
    try {
      indexed.config = parse_compressed_tensors_config(config["quantization_config"]);
    } catch (const std::exception& error) {
      throw Error(ErrorClass::BadInput, "splice.config_mismatch",
                  fmt::format("quantization_config cannot be read: {}", error.what()),
                  (checkpoint.directory() / "config.json").string());
    }
  }
  std::set<std::string> seen;
  for (const auto& location : checkpoint.tensors()) {
    indexed.position.emplace(location.info, indexed.position.size());
    const auto parsed = parse_tensor_name(location.info->name);
    if (parsed.parameter_name.empty()) continue;
    // A codebook travels with the VQ modules that index it (SplicePlanner::emit_codebooks).
    if (indexed.codebooks.contains(location.info->name)) continue;
    if (seen.insert(parsed.module_path).second) indexed.order.push_back(parsed.module_path);
  }
  return indexed;
}

// The module's tensor rules match against: its weight (or packed weight) when it has one.
// Role, layer and expert come from the module path, except that a module's other parameters
// can have roles of their own (the router's e_score_correction_bias is RouterBias, not a
// Linear), so the weight decides.
ParsedTensorName parsed_module(const ModuleParameters& parameters) {
  if (const auto* codes = code_tensor(parameters)) return parse_tensor_name(codes->info->name);
  return parse_tensor_name(parameters.begin()->second.info->name);
}

// A module's storage, refusing what no config we write can describe.
WeightLayout supported_layout(const std::string& module, const ModuleParameters& parameters,
                              const Checkpoint& source) {
  const WeightFormat& format = detect_weight_format(parameters);
  const WeightLayout layout = format.layout;
  if (layout == WeightLayout::Dense || format.decodable()) return layout;
  const bool has_companion = std::any_of(parameters.begin(), parameters.end(), [](const auto& p) {
    return is_quantization_companion(parse_tensor_name(p.second.info->name).parameter);
  });
  if (layout == WeightLayout::Unrecognized && !has_companion) return layout;  // norms, biases
  throw Error(ErrorClass::BadInput, "splice.unsupported_layout",
              fmt::format("module stored as {}, which splice cannot carry into a "
                          "compressed-tensors or modelopt config",
                          format.name),
              source_name(source), module);
}

// The shape a module must have in every source: the weight's logical [out, in], or for
// modules without a weight each tensor's shape.
std::string shape_signature(const ModuleParameters& parameters, WeightLayout layout) {
  if (const auto shape = logical_weight_shape(parameters, layout)) return shape_to_string(*shape);
  std::string text;
  for (const auto& [name, location] : parameters)
    if (!is_quantization_companion(parse_tensor_name(location.info->name).parameter))
      text += name + shape_to_string(location.info->shape) + " ";
  return text;
}

// NVFP4 with a static input scale (W4A4): the layout's optional companion is stored.
bool has_input_scale(const ModuleParameters& parameters, WeightLayout layout) {
  return parameters.count(weight_format(layout).optional_parameter) != 0;
}

// The config convention an NVFP4 layout belongs to.
OutputFormat nvfp4_format(WeightLayout layout) {
  return weight_format(layout).config == ConfigGroup::Modelopt ? OutputFormat::Modelopt
                                                               : OutputFormat::CompressedTensors;
}

// What one output module is: its chosen source and storage.
struct ChosenModule {
  std::string module;
  const SourceModules* source = nullptr;
  const ModuleParameters* parameters = nullptr;
  WeightLayout layout = WeightLayout::Unrecognized;
  std::string rule = "base";
};

class SplicePlanner {
 public:
  SplicePlanner(const SpliceRequest& request, const Nvfp4LayoutConversionFactory& convert)
      : request_(request), convert_(convert) {}

  SplicePlan plan() {
    index_sources();
    choose_modules();
    check_fused_groups();
    describe_model();
    emit_items();
    for (std::size_t r = 0; r < request_.rules.size(); ++r)
      if (result_.modules_per_rule[r] == 0)
        result_.warnings.push_back(
            fmt::format("take rule '{}' selected no module", request_.rules[r].text));
    for (const auto& [pair, count] : shadowed_)
      result_.warnings.push_back(fmt::format(
          "take rule '{}' also matches {} module(s) that the earlier rule '{}' takes from "
          "another source (the first matching rule wins)",
          request_.rules[pair.second].text, count, request_.rules[pair.first].text));
    return std::move(result_);
  }

 private:
  void index_sources() {
    if (!request_.base) throw Error(ErrorClass::BadInput, "splice.no_base", "splice needs a base");
    if (request_.rules.size() != request_.rule_sources.size())
      throw Error(ErrorClass::Internal, "splice.rule_sources", "one source per take rule");
    const auto layout = model_layout_from_config(request_.base->config());
    if (!layout)
      throw Error(ErrorClass::BadInput, "splice.config_mismatch",
                  "config.json lacks the layer counts (num_hidden_layers) the rules need",
                  (request_.base->directory() / "config.json").string());
    layout_ = *layout;
    add_source(*request_.base);
    for (const auto* source : request_.rule_sources) {
      check_same_architecture(*request_.base, *source);
      add_source(*source);
    }
    result_.modules_per_rule.assign(request_.rules.size(), 0);
  }

  void add_source(const Checkpoint& checkpoint) {
    for (const auto& source : sources_)
      if (source.checkpoint == &checkpoint) return;
    result_.plan.inputs.push_back(&checkpoint);
    sources_.push_back(index_modules(checkpoint, result_.plan.inputs.size() - 1));
  }

  const SourceModules& source_of(const Checkpoint* checkpoint) const {
    return *std::find_if(sources_.begin(), sources_.end(),
                         [&](const auto& source) { return source.checkpoint == checkpoint; });
  }

  // Base modules in base order, then modules only a rule source has, in that source's order
  // when its rule selects them.
  void choose_modules() {
    std::set<std::string> listed;
    std::vector<std::pair<std::string, const ModuleParameters*>> candidates;
    for (const auto& source : sources_)
      for (const auto& module : source.order)
        if (listed.insert(module).second)
          candidates.emplace_back(module, &source.modules.at(module));
    for (const auto& [module, any_parameters] : candidates) {
      const auto parsed = parsed_module(*any_parameters);
      std::optional<std::size_t> rule;
      for (std::size_t r = 0; r < request_.rules.size(); ++r) {
        if (!request_.rules[r].match.matches(parsed, layout_)) continue;
        if (!rule) {
          rule = r;
        } else if (request_.rule_sources[r] != request_.rule_sources[*rule]) {
          ++shadowed_[{*rule, r}];  // first match wins; said below, as the user may not expect it
        }
      }
      const SourceModules& base = sources_.front();
      if (!rule && !base.modules.count(module)) continue;  // only in a source nobody took it from
      ChosenModule chosen;
      chosen.module = module;
      chosen.source = rule ? &source_of(request_.rule_sources[*rule]) : &base;
      const auto found = chosen.source->modules.find(module);
      if (found == chosen.source->modules.end())
        throw Error(
            ErrorClass::BadInput, "splice.missing_module",
            fmt::format("take rule '{}' selects this module, but {} has no tensors for it",
                        request_.rules[*rule].text, source_name(*chosen.source->checkpoint)),
            {}, module);
      chosen.parameters = &found->second;
      chosen.layout = supported_layout(module, *chosen.parameters, *chosen.source->checkpoint);
      if (chosen.layout == WeightLayout::Vq && !chosen.source->vq.module(module))
        throw Error(ErrorClass::BadInput, "splice.unsupported_layout",
                    "VQ tensors, but the source's quantization_config.vq does not declare the "
                    "module (its tier and codebook)",
                    source_name(*chosen.source->checkpoint), module);
      if (rule) {
        chosen.rule = request_.rules[*rule].text;
        ++result_.modules_per_rule[*rule];
        check_shape_against_base(chosen);
      }
      chosen_.push_back(std::move(chosen));
    }
    // A rule that takes every module leaves nothing of the base but its config.json: almost
    // surely a selector that went missing or came out too wide.
    for (std::size_t r = 0; r < request_.rules.size(); ++r)
      if (result_.modules_per_rule[r] == chosen_.size())
        throw Error(ErrorClass::BadInput, "splice.rule_takes_everything",
                    fmt::format("take rule '{}' selects every one of the {} modules: nothing would "
                                "come from the base; make {} the --base instead",
                                request_.rules[r].text, chosen_.size(), request_.rules[r].source));
  }

  void check_shape_against_base(const ChosenModule& chosen) const {
    const SourceModules& base = sources_.front();
    const auto in_base = base.modules.find(chosen.module);
    if (in_base == base.modules.end() || chosen.source == &base) return;
    const std::string ours = shape_signature(*chosen.parameters, chosen.layout);
    const std::string theirs = shape_signature(in_base->second, classify_module(in_base->second));
    if (ours != theirs)
      throw Error(ErrorClass::BadInput, "splice.shape_mismatch",
                  fmt::format("{} in {} but {} in the base {}", ours,
                              source_name(*chosen.source->checkpoint), theirs,
                              source_name(*base.checkpoint)),
                  {}, chosen.module);
  }

  // Engines load the members of a fused module into one matrix with one scheme (and, for
  // NVFP4, one global scale): members from different sources only work when none is
  // quantized.
  void check_fused_groups() const {
    std::map<std::string, std::vector<const ChosenModule*>> groups;
    for (const auto& chosen : chosen_) {
      if (chosen.layout == WeightLayout::Unrecognized) continue;
      if (const auto group = fused_group(parsed_module(*chosen.parameters)))
        groups[group->name].push_back(&chosen);
    }
    for (const auto& [name, members] : groups) {
      // Compared through a pointer: clang before 16 cannot capture a structured binding.
      const auto* first = members.front();
      const bool one_source =
          std::all_of(members.begin(), members.end(),
                      [first](const auto* member) { return member->source == first->source; });
      const bool any_quantized = std::any_of(members.begin(), members.end(), [](const auto* m) {
        return is_quantized_layout(m->layout);
      });
      if (one_source || !any_quantized) continue;
      std::string parts;
      for (const auto* member : members)
        parts += fmt::format("{}{} ({}, {})", parts.empty() ? "" : ", ", member->module,
                             weight_layout_name(member->layout),
                             source_name(*member->source->checkpoint));
      throw Error(ErrorClass::BadInput, "splice.fused_split",
                  fmt::format("engines load {} as one matrix, but its members come from different "
                              "sources: {}; take them with one rule",
                              name, parts),
                  {}, members.front()->module);
    }
  }

  void describe_model() {
    std::optional<bool> activations;
    bool any_compressed_tensors = false, any_nvfp4 = false;
    for (const auto& chosen : chosen_) {
      if (chosen.layout == WeightLayout::Vq) {
        result_.model.vq_modules.push_back({chosen.module, *chosen.source->vq.tier_of(chosen.module),
                                            chosen.source->vq.module(chosen.module)->codebook});
        continue;
      }
      if (chosen.layout == WeightLayout::Fp8Block)  // weight + weight_scale_inv, moved as they are
        result_.model.fp8_block_modules.push_back(chosen.module);
      const auto parsed = parsed_module(*chosen.parameters);
      if (is_nvfp4_layout(chosen.layout)) {
        any_nvfp4 = true;
        any_compressed_tensors |= nvfp4_format(chosen.layout) == OutputFormat::CompressedTensors;
        result_.model.nvfp4_modules.push_back(chosen.module);
        const bool input = has_input_scale(*chosen.parameters, chosen.layout);
        if (activations && *activations != input)
          throw Error(ErrorClass::BadInput, "splice.mixed_activations",
                      fmt::format("NVFP4 modules {} static input scales and others {}: one config "
                                  "cannot describe both W4A4 and W4A16 NVFP4",
                                  input ? "with" : "without", input ? "without" : "with"),
                      source_name(*chosen.source->checkpoint), chosen.module);
        activations = input;
      } else if (chosen.layout == WeightLayout::PackQuantized) {
        any_compressed_tensors = true;
        const auto options = integer_scheme(chosen);
        auto group = std::find_if(
            result_.model.integer_groups.begin(), result_.model.integer_groups.end(),
            [&](const IntegerModules& existing) { return existing.options == options; });
        if (group == result_.model.integer_groups.end()) {
          result_.model.integer_groups.push_back({options, false, {}});
          group = std::prev(result_.model.integer_groups.end());
        }
        group->modules.push_back(chosen.module);
      } else if (chosen.layout == WeightLayout::Dense && is_linear(parsed.role)) {
        result_.model.unquantized_linears.push_back(chosen.module);
      }
    }
    result_.model.activations_quantized = activations.value_or(false);
    const bool integers = !result_.model.integer_groups.empty();
    const bool vq = !result_.model.vq_modules.empty();
    if (request_.format == OutputFormat::Modelopt && vq)
      throw Error(ErrorClass::BadInput, "splice.format_conflict",
                  fmt::format("modelopt output cannot declare the {} VQ module(s); use --format "
                              "compressed-tensors",
                              result_.model.vq_modules.size()));
    if (request_.format == OutputFormat::Modelopt && integers)
      throw Error(
          ErrorClass::BadInput, "splice.format_conflict",
          fmt::format("modelopt output cannot describe the {} pack-quantized integer "
                      "module(s); use --format compressed-tensors",
                      quantized_linear_count(result_.model) - result_.model.nvfp4_modules.size()));
    const bool fp8_block = !result_.model.fp8_block_modules.empty();
    if (fp8_block && (any_nvfp4 || integers || vq))
      throw Error(ErrorClass::BadInput, "splice.format_conflict",
                  fmt::format("{} FP8 block-scaled module(s) (config quant_method fp8) and {} "
                              "NVFP4 or pack-quantized one(s): no one quantization config "
                              "describes both",
                              result_.model.fp8_block_modules.size(),
                              quantized_linear_count(result_.model) -
                                  result_.model.fp8_block_modules.size()));
    if (fp8_block) {
      // The FP8 config (docs/formats/fp8-block.md) is written whatever the format says.
      result_.format = request_.format.value_or(OutputFormat::Modelopt);
      return;
    }
    if (!any_nvfp4 && !integers && !vq) return;  // nothing quantized: no config, no format
    result_.format = request_.format                              ? *request_.format
                     : (integers || vq || any_compressed_tensors) ? OutputFormat::CompressedTensors
                                                                  : OutputFormat::Modelopt;
    carry_kv_cache_setting();
  }

  // The attention (whose KV cache it is) comes from the base unless a rule takes it: the
  // base's modelopt KV-cache setting (FP8, no scale tensors: engines use 1.0) carries over to a
  // modelopt output. Our compressed-tensors writer has no KV-cache scheme, so there it is
  // dropped, and said.
  void carry_kv_cache_setting() {
    const auto& config = request_.base->config();
    if (!config.is_object() || !config.contains("quantization_config")) return;
    const auto& block = config["quantization_config"];
    if (!block.is_object() || !block.contains("kv_cache_quant_algo") ||
        !block["kv_cache_quant_algo"].is_string())
      return;
    const auto algorithm = block["kv_cache_quant_algo"].get<std::string>();
    if (*result_.format == OutputFormat::Modelopt)
      result_.model.kv_cache_quant_algo = algorithm;
    else
      result_.warnings.push_back(fmt::format(
          "the base's KV-cache quantization ({}) is not carried into the compressed-tensors "
          "config; the output's KV cache stays in the model dtype",
          algorithm));
  }

  // The scheme the source's config states for the module (one scale column is per channel or
  // one group as wide as the row, which only the config tells apart), else what the tensors
  // hold.
  IntegerOptions integer_scheme(const ChosenModule& chosen) const {
    auto options = pack_quantized_options(chosen.module, *chosen.parameters,
                                          source_name(*chosen.source->checkpoint),
                                          "splice.unsupported_layout");
    const auto& config = chosen.source->config;
    const auto* group = config ? covering_group(*config, chosen.module) : nullptr;
    const auto in_features = (*logical_weight_shape(*chosen.parameters, chosen.layout))[1];
    // 7-bit codes pack like 8-bit ones (four per word): only the config can say 7, and its
    // num_bits is kept wherever the packing fits it.
    const auto words_per_row = chosen.parameters->at("weight_packed").info->shape[1];
    if (group && group->type == "int" && group->format == "pack-quantized" && group->bits >= 2 &&
        group->bits <= 8 && packed_words(in_features, group->bits) == words_per_row)
      options.bits = group->bits;
    if (options.group_size == kChannelGroup && group && group->type == "int" &&
        group->bits == options.bits && group->symmetric == options.symmetric &&
        group->strategy == "group" && group->group_size >= static_cast<std::int64_t>(in_features))
      options.group_size = group->group_size;
    return options;
  }

  // Each codebook the output's VQ modules index, once, from the source of the first module
  // that indexes it. Two sources giving one codebook name different values (or one tier name
  // different numbers) cannot share one output tensor (or config entry).
  void emit_codebooks() {
    std::map<std::string, std::pair<const SourceModules*, std::string>> codebook_from;
    std::map<std::string, std::pair<VqTier, const SourceModules*>> tier_from;
    for (const auto& chosen : chosen_) {
      if (chosen.layout != WeightLayout::Vq) continue;
      const auto& declared = *chosen.source->vq.module(chosen.module);
      const VqTier& tier = *chosen.source->vq.tier_of(chosen.module);
      const auto [tier_entry, new_tier] = tier_from.try_emplace(tier.name, tier, chosen.source);
      if (!new_tier && !(tier_entry->second.first == tier))
        throw Error(ErrorClass::BadInput, "splice.vq_codebook_clash",
                    fmt::format("tier {} is d {} K {} in {} but d {} K {} in {}: one config "
                                "cannot declare both",
                                tier.name, tier_entry->second.first.d, tier_entry->second.first.k,
                                source_name(*tier_entry->second.second->checkpoint), tier.d,
                                tier.k, source_name(*chosen.source->checkpoint)),
                    {}, chosen.module);
      const auto location = chosen.source->checkpoint->find(declared.codebook);
      if (!location)
        throw Error(ErrorClass::BadInput, "splice.missing_module",
                    fmt::format("the codebook of tier {} that the config names for {} is not in "
                                "the checkpoint",
                                tier.name, chosen.module),
                    source_name(*chosen.source->checkpoint), declared.codebook);
      const auto [entry, added] =
          codebook_from.try_emplace(declared.codebook, chosen.source, chosen.rule);
      if (added) {
        result_.plan.items.push_back(copy_item(
            {chosen.source->input, location->shard, location->info}, declared.codebook,
            chosen.rule));
        continue;
      }
      const SourceModules& first = *entry->second.first;
      if (&first == chosen.source) continue;
      const auto earlier = *first.checkpoint->find(declared.codebook);
      const bool same = earlier.info->dtype == location->info->dtype &&
                        earlier.info->shape == location->info->shape &&
                        earlier.shard->read(*earlier.info) == location->shard->read(*location->info);
      if (!same)
        throw Error(ErrorClass::BadInput, "splice.vq_codebook_clash",
                    fmt::format("{} and {} both hold this codebook, with different values; VQ "
                                "modules taken from both cannot share it (take them from one "
                                "source)",
                                source_name(*first.checkpoint),
                                source_name(*chosen.source->checkpoint)),
                    {}, declared.codebook);
    }
  }

  void emit_items() {
    emit_items_of_modules();
    emit_codebooks();
  }

  void emit_items_of_modules() {
    for (const auto& chosen : chosen_) {
      const bool convert =
          is_nvfp4_layout(chosen.layout) && nvfp4_format(chosen.layout) != *result_.format;
      result_.decisions.push_back({chosen.module, chosen.source->input, chosen.rule,
                                   chosen.layout == WeightLayout::Unrecognized
                                       ? "tensors"
                                       : weight_layout_name(chosen.layout),
                                   convert});
      std::set<std::string> converted;
      if (convert) converted = emit_conversion(chosen);
      for (const auto& location : tensors_in_source_order(chosen)) {
        const auto parameter = parse_tensor_name(location.info->name).parameter_name;
        if (converted.count(parameter)) continue;
        result_.plan.items.push_back(
            copy_item({chosen.source->input, location.shard, location.info}, location.info->name,
                      chosen.rule));
      }
    }
  }

  std::vector<TensorLocation> tensors_in_source_order(const ChosenModule& chosen) const {
    std::vector<TensorLocation> locations;
    for (const auto& [name, location] : *chosen.parameters) locations.push_back(location);
    const auto& position = chosen.source->position;
    std::sort(locations.begin(), locations.end(), [&](const auto& a, const auto& b) {
      return position.at(a.info) < position.at(b.info);
    });
    return locations;
  }

  // One item converting the module's NVFP4 tensors to the output layout; returns the
  // parameters it consumed.
  std::set<std::string> emit_conversion(const ChosenModule& chosen) {
    const bool input = has_input_scale(*chosen.parameters, chosen.layout);
    const auto names = weight_format(chosen.layout).parameter_names(input);
    PlanItem item;
    for (const auto& name : names) {
      const auto found = chosen.parameters->find(name);
      if (found == chosen.parameters->end())
        throw Error(ErrorClass::BadInput, "splice.unsupported_layout",
                    fmt::format("NVFP4 module without its {}", name),
                    source_name(*chosen.source->checkpoint), chosen.module);
      item.sources.push_back({chosen.source->input, found->second.shard, found->second.info});
    }
    const auto shape = *logical_weight_shape(*chosen.parameters, chosen.layout);
    item.outputs = weight_format_for(CodeFamily::Nvfp4, *result_.format)
                       .output_specs(chosen.module, shape[0], shape[1], {.activations = input});
    item.transform = convert_(nvfp4_format(chosen.layout), *result_.format, input);
    item.scheme = fmt::format("nvfp4 {}→{}", output_format_name(nvfp4_format(chosen.layout)),
                              output_format_name(*result_.format));
    item.decided_by = chosen.rule;
    result_.plan.items.push_back(std::move(item));
    return {names.begin(), names.end()};
  }

  const SpliceRequest& request_;
  const Nvfp4LayoutConversionFactory& convert_;
  ModelLayout layout_;
  std::vector<SourceModules> sources_;  // base first
  std::vector<ChosenModule> chosen_;
  // (earlier rule, later rule from another source) → modules both match.
  std::map<std::pair<std::size_t, std::size_t>, std::size_t> shadowed_;
  SplicePlan result_;
};

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = std::min(text.find(separator, start), text.size());
    std::string part(text.substr(start, end - start));
    part.erase(0, part.find_first_not_of(' '));
    part.erase(part.find_last_not_of(' ') + 1);
    if (!part.empty()) parts.push_back(std::move(part));
    start = end + 1;
  }
  return parts;
}

}  // namespace

TakeRule parse_take_rule(const std::string& text) {
  auto fail = [&](const std::string& why) {
    return Error(ErrorClass::BadInput, "splice.bad_rule",
                 fmt::format("--take '{}': {} (expected SOURCE:SELECTOR, e.g. "
                             "nvfp4-dir:category=routed_expert;layers=3-77)",
                             text, why));
  };
  const auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0) throw fail("no SOURCE: before the selector");
  TakeRule rule;
  rule.text = text;
  rule.source = text.substr(0, colon);
  rule.match.name = text;
  const auto terms = split(std::string_view(text).substr(colon + 1), ';');
  if (terms.empty()) throw fail("empty selector (to take everything, make that source the base)");
  for (const auto& term : terms) {
    const auto equals = term.find('=');
    if (equals == std::string::npos) {  // shorthand: a category name, or "mtp"
      if (term == "mtp") {
        rule.match.mtp = true;
      } else if (const auto category = parse_category_name(term)) {
        rule.match.categories.push_back(*category);
      } else {
        throw fail(fmt::format("'{}' is neither a category name nor key=value", term));
      }
      continue;
    }
    const std::string key = term.substr(0, equals);
    const std::string value = term.substr(equals + 1);
    if (key == "category") {
      for (const auto& name : split(value, ',')) {
        const auto category = parse_category_name(name);
        if (!category) throw fail(fmt::format("unknown category '{}'", name));
        rule.match.categories.push_back(*category);
      }
    } else if (key == "role") {
      for (const auto& name : split(value, ',')) {
        const auto role = parse_role_name(name);
        if (!role) throw fail(fmt::format("unknown role '{}'", name));
        rule.match.roles.push_back(*role);
      }
    } else if (key == "module") {
      rule.match.modules.push_back(NamePattern::parse(value));
    } else if (key == "layers") {
      rule.match.layers = LayerSelector::parse(value);
    } else if (key == "mtp") {
      if (value != "true" && value != "false") throw fail("mtp takes true or false");
      rule.match.mtp = value == "true";
    } else {
      throw fail(fmt::format("unknown key '{}' (category, role, module, layers, mtp)", key));
    }
  }
  return rule;
}

SplicePlan plan_splice(const SpliceRequest& request,
                       const Nvfp4LayoutConversionFactory& convert_layout) {
  return SplicePlanner(request, convert_layout).plan();
}

}  // namespace qs
