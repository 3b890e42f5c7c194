#include "qs/ckpt/validate/checkpoint_summary.h"

#include "qs/ckpt/core/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <exception>
#include <utility>

#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

// CheckpointSummary::config_groups.
std::vector<ConfigGroupRow> config_group_rows(const Checkpoint& checkpoint) {
  const auto& config = checkpoint.config();
  const bool has_block = config.is_object() && config.contains("quantization_config") &&
                         config["quantization_config"].is_object();
  const std::string method =
      has_block ? config["quantization_config"].value("quant_method", std::string()) : "";
  std::vector<ConfigGroupRow> rows;
  ConfigGroupRow ignored{"ignored", "unquantized", "-"};
  ConfigGroupRow unmatched{"unmatched", "no target, not ignored", "-"};
  const auto modules = modules_of(checkpoint);
  if (method == "compressed-tensors") {
    CompressedTensorsConfig parsed;
    try {
      parsed = parse_compressed_tensors_config(config["quantization_config"]);
    } catch (const std::exception&) {
      return {};
    }
    for (const auto& group : parsed.groups)
      rows.push_back({group.name, scheme_description(group), group.format});
    for (const auto& [path, parameters] : modules) {
      if (!is_config_accountable(parameters)) continue;
      const auto resolution = resolve_compressed_tensors(parsed, path);
      (resolution.decision == CtDecision::Targeted  ? rows[resolution.group]
       : resolution.decision == CtDecision::Ignored ? ignored
                                                    : unmatched)
          .add(parameters);
    }
  } else if (const auto exclusions = read_modelopt_exclusions(checkpoint); exclusions.declared) {
    const std::vector<std::string> none;
    const auto& entries = exclusions.lists.empty() ? none : exclusions.lists.front().entries;
    const std::string algorithm =
        has_block ? config["quantization_config"].value("quant_algo", std::string("NVFP4"))
                  : std::string("NVFP4");
    rows.push_back({algorithm, "nvfp4 (float 4-bit, group 16)", "modelopt"});
    for (const auto& [path, parameters] : modules) {
      if (!is_config_accountable(parameters)) continue;
      (modelopt_excluding_entry(entries, path) ? ignored : rows.front()).add(parameters);
    }
  } else {
    return {};
  }
  // "ignored (BF16)": the dtypes its weights are kept in.
  ignored.name = fmt::format("ignored ({})", fmt::join(ignored.dtypes, ","));
  rows.push_back(std::move(ignored));
  if (unmatched.modules) rows.push_back(std::move(unmatched));
  return rows;
}

nlohmann::ordered_json vq_usage_json(const VqTierUsage& usage) {
  return {{"modules", usage.modules},
          {"weights", usage.weights},
          {"bytes", usage.bytes},
          {"bits_per_weight", usage.bits_per_weight()}};
}

nlohmann::ordered_json vq_json(const VqUsage& usage, const std::string& error) {
  nlohmann::ordered_json out;
  out["total"] = vq_usage_json(usage.total);
  out["tiers"] = nlohmann::ordered_json::object();
  for (const auto& [tier, counted] : usage.tiers) out["tiers"][tier] = vq_usage_json(counted);
  out["layers"] = nlohmann::ordered_json::object();
  for (const auto& [layer, tiers] : usage.layers)
    for (const auto& [tier, counted] : tiers)
      out["layers"][std::to_string(layer)][tier] = vq_usage_json(counted);
  out["codebooks"] = nlohmann::ordered_json::array();
  for (const auto& listing : usage.codebooks)
    out["codebooks"].push_back(
        {{"tensor", listing.tensor},
         {"tier", listing.tier},
         {"modules", listing.modules},
         {"present", listing.info != nullptr},
         {"dtype", listing.info ? std::string(dtype_name(listing.info->dtype)) : ""},
         {"shape", listing.info ? listing.info->shape : Shape{}}});
  if (!error.empty()) out["config_error"] = error;
  return out;
}

nlohmann::ordered_json tally_json(const std::map<std::string, TensorTally>& tallies) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [name, tally] : tallies)
    out[name] = {{"tensors", tally.tensors}, {"bytes", tally.bytes}, {"dtypes", tally.dtypes}};
  return out;
}

}  // namespace

void TensorTally::add(const TensorInfo& info) {
  ++tensors;
  bytes += info.byte_size();
  dtypes.insert(std::string(dtype_name(info.dtype)));
}

void ConfigGroupRow::add(const ModuleParameters& parameters) {
  ++modules;
  for (const auto& [name, location] : parameters) {
    ++tensors;
    bytes += location.info->byte_size();
  }
  if (const auto weight = parameters.find("weight"); weight != parameters.end())
    dtypes.insert(std::string(dtype_name(weight->second.info->dtype)));
}

CheckpointSummary summarize_checkpoint(const Checkpoint& checkpoint) {
  CheckpointSummary summary;
  auto layout = model_layout_from_config(checkpoint.config());
  for (const auto& location : checkpoint.tensors()) {
    const auto& info = *location.info;
    auto parsed = parse_tensor_name(info.name);
    summary.by_category[category_name(category(parsed.role))].add(info);
    summary.by_dtype[std::string(dtype_name(info.dtype))].add(info);
    if (parsed.layer) {
      // Without a config, only the MTP-only tensors reveal an MTP layer.
      bool mtp = layout ? in_mtp_layer(parsed, *layout)
                        : category(parsed.role) == TensorCategory::MtpExtra;
      (mtp ? summary.mtp_layers : summary.layers).insert(static_cast<int>(*parsed.layer));
      if (parsed.expert)
        summary.experts_by_layer[static_cast<int>(*parsed.layer)].insert(
            static_cast<int>(*parsed.expert));
    }
  }
  summary.quantization = detect_quantization(checkpoint);
  summary.config_groups = config_group_rows(checkpoint);
  VqDeclaration declaration;
  try {
    declaration = VqDeclaration::of(checkpoint);
  } catch (const Error& error) {
    summary.vq_config_error = error.what();
  }
  auto usage = vq_usage(checkpoint, declaration);
  if (usage.total.modules > 0 || !declaration.empty()) summary.vq = std::move(usage);
  return summary;
}

nlohmann::ordered_json config_summary(const nlohmann::json& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  if (!config.is_object()) return out;
  for (const char* key :
       {"model_type", "architectures", "num_hidden_layers", "num_nextn_predict_layers",
        "first_k_dense_replace", "hidden_size", "intermediate_size", "moe_intermediate_size",
        "n_routed_experts", "num_experts", "num_experts_per_tok", "n_shared_experts",
        "num_attention_heads", "q_lora_rank", "kv_lora_rank", "index_topk", "vocab_size", "dtype",
        "torch_dtype"})
    if (config.contains(key)) out[key] = config[key];
  return out;
}

nlohmann::ordered_json checkpoint_summary_json(const Checkpoint& checkpoint,
                                               const CheckpointSummary& summary) {
  nlohmann::ordered_json out;
  out["path"] = checkpoint.directory().string();
  out["shards"] = checkpoint.shards().size();
  out["tensors"] = checkpoint.tensors().size();
  out["tensor_bytes"] = checkpoint.tensor_bytes();
  out["file_bytes"] = checkpoint.file_bytes();
  out["layers"] = summary.layers;
  out["mtp_layers"] = summary.mtp_layers;
  nlohmann::ordered_json experts = nlohmann::ordered_json::object();
  for (const auto& [layer, ids] : summary.experts_by_layer)
    experts[std::to_string(layer)] = ids.size();
  out["experts_per_layer"] = experts;
  out["quantization"] = {{"detected", summary.quantization.summary},
                         {"declared", summary.quantization.declared}};
  nlohmann::ordered_json layouts = nlohmann::ordered_json::object();
  for (const auto& [layout, count] : summary.quantization.layouts)
    layouts[layout] = {{"modules", count.modules}, {"bytes", count.bytes}};
  out["quantization"]["weight_layouts"] = layouts;
  auto groups = nlohmann::ordered_json::array();
  for (const auto& row : summary.config_groups)
    groups.push_back({{"name", row.name},
                      {"scheme", row.scheme},
                      {"format", row.format},
                      {"modules", row.modules},
                      {"tensors", row.tensors},
                      {"bytes", row.bytes}});
  out["quantization"]["config_groups"] = groups;
  if (summary.vq) out["quantization"]["vq"] = vq_json(*summary.vq, summary.vq_config_error);
  out["by_category"] = tally_json(summary.by_category);
  out["by_dtype"] = tally_json(summary.by_dtype);
  out["config"] = config_summary(checkpoint.config());
  return out;
}

}  // namespace qs
