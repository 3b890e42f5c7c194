// quantsmith inspect PATH: what is in a checkpoint, from headers and config alone.

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "cli_support.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs::cli {
namespace {

struct InspectOptions {
  std::string path;
  bool json = false;
};

struct Tally {
  std::uint64_t tensors = 0;
  std::uint64_t bytes = 0;
  std::set<std::string> dtypes;

  void add(const TensorInfo& info) {
    ++tensors;
    bytes += info.byte_size();
    dtypes.insert(std::string(dtype_name(info.dtype)));
  }
};

// One row of the per-config-group table: the Linears a quantization config resolves to a
// group (or to ignore), with their tensors and bytes, companions included.
struct ConfigGroupRow {
  std::string name;
  std::string scheme;
  std::string format;
  std::uint64_t modules = 0;
  std::uint64_t tensors = 0;
  std::uint64_t bytes = 0;
  std::set<std::string> dtypes;  // of the weights (the ignored row is labelled with them)

  void add(const ModuleParameters& parameters) {
    ++modules;
    for (const auto& [name, location] : parameters) {
      ++tensors;
      bytes += location.info->byte_size();
    }
    if (const auto weight = parameters.find("weight"); weight != parameters.end())
      dtypes.insert(std::string(dtype_name(weight->second.info->dtype)));
  }
};

struct Summary {
  std::map<std::string, Tally> by_category;
  std::map<std::string, Tally> by_dtype;
  std::set<int> layers;
  std::set<int> mtp_layers;
  std::map<int, std::set<int>> experts_by_layer;
  QuantizationDetection quantization;
  std::vector<ConfigGroupRow> config_groups;  // empty without a quantization config
};

// The rows of the per-group table: one per config group (compressed-tensors), or one for
// modelopt's NVFP4 Linears, then the ignored (excluded) Linears and, if any, the unmatched
// ones. Empty without a quantization config, or when it cannot be read (validate says why).
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

Summary summarize(const Checkpoint& checkpoint) {
  Summary summary;
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
  return summary;
}

// The architecture keys a user checks first; absent keys are left out.
nlohmann::ordered_json config_summary(const nlohmann::json& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  if (!config.is_object()) return out;
  for (const char* key :
       {"model_type", "architectures", "num_hidden_layers", "num_nextn_predict_layers",
        "first_k_dense_replace", "hidden_size", "intermediate_size", "moe_intermediate_size",
        "n_routed_experts", "num_experts", "num_experts_per_tok", "n_shared_experts", "num_attention_heads",
        "q_lora_rank", "kv_lora_rank", "index_topk", "vocab_size", "dtype", "torch_dtype"})
    if (config.contains(key)) out[key] = config[key];
  return out;
}

std::string ranges_of(const std::set<int>& values) {
  std::vector<std::string> parts;
  for (auto it = values.begin(); it != values.end();) {
    int first = *it, last = *it;
    while (++it != values.end() && *it == last + 1) last = *it;
    parts.push_back(first == last ? std::to_string(first) : fmt::format("{}-{}", first, last));
  }
  return parts.empty() ? "none" : fmt::format("{}", fmt::join(parts, ","));
}

std::string experts_text(const Summary& summary) {
  std::set<std::size_t> counts;
  for (const auto& [layer, experts] : summary.experts_by_layer) counts.insert(experts.size());
  if (counts.empty()) return "none";
  if (counts.size() == 1)
    return fmt::format("{} per MoE layer in {} layers", *counts.begin(),
                       summary.experts_by_layer.size());
  return fmt::format("{} to {} per MoE layer", *counts.begin(), *counts.rbegin());
}

nlohmann::ordered_json tally_json(const std::map<std::string, Tally>& tallies) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [name, tally] : tallies)
    out[name] = {{"tensors", tally.tensors}, {"bytes", tally.bytes}, {"dtypes", tally.dtypes}};
  return out;
}

nlohmann::ordered_json summary_json(const Checkpoint& checkpoint, const Summary& summary) {
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
  out["by_category"] = tally_json(summary.by_category);
  out["by_dtype"] = tally_json(summary.by_dtype);
  out["config"] = config_summary(checkpoint.config());
  return out;
}

void print_tally(const char* title, const std::map<std::string, Tally>& tallies,
                 std::uint64_t total_bytes) {
  fmt::print("{}:\n", title);
  for (const auto& [name, tally] : tallies)
    fmt::print("  {:<16} {:>7} tensors  {:>11}  {:>5.1f}%  {}\n", name, tally.tensors,
               human_bytes(tally.bytes),
               100.0 * tally.bytes / std::max<std::uint64_t>(total_bytes, 1),
               fmt::join(tally.dtypes, ","));
}

void print_summary(const Checkpoint& checkpoint, const Summary& summary) {
  fmt::print("{}: {} shard(s), {} tensors, {} of tensor data\n", checkpoint.directory().string(),
             checkpoint.shards().size(), checkpoint.tensors().size(),
             human_bytes(checkpoint.tensor_bytes()));
  auto config = config_summary(checkpoint.config());
  if (!config.empty()) {
    std::vector<std::string> items;
    for (const auto& [key, value] : config.items()) items.push_back(key + "=" + value.dump());
    fmt::print("config: {}\n", fmt::join(items, " "));
  }
  fmt::print("layers: {}; MTP layers: {}; routed experts: {}\n", ranges_of(summary.layers),
             ranges_of(summary.mtp_layers), experts_text(summary));
  fmt::print("quantization: {}{}\n", summary.quantization.summary,
             summary.quantization.declared.empty() ? " (nothing declared)"
                                                   : " (" + summary.quantization.declared + ")");
  for (const auto& [layout, count] : summary.quantization.layouts)
    fmt::print("  {:<26} {:>7} modules  {:>11}\n", layout, count.modules, human_bytes(count.bytes));
  if (!summary.config_groups.empty()) {
    fmt::print("config groups:\n  {:<20} {:<32} {:<22} {:>7} {:>8} {:>11}\n", "group", "scheme",
               "format", "modules", "tensors", "bytes");
    for (const auto& row : summary.config_groups)
      fmt::print("  {:<20} {:<32} {:<22} {:>7} {:>8} {:>11}\n", row.name, row.scheme, row.format,
                 row.modules, row.tensors, human_bytes(row.bytes));
  }
  print_tally("by category", summary.by_category, checkpoint.tensor_bytes());
  print_tally("by dtype", summary.by_dtype, checkpoint.tensor_bytes());
}

}  // namespace

SubcommandRunner register_inspect(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  auto* command = app.add_subcommand(
      "inspect",
      "Summarize a checkpoint from its headers and config: tensors and bytes by category and "
      "dtype, layers, experts, detected quantization. Reads no tensor data.");
  command->add_option("path", options->path, "checkpoint directory or .safetensors file")
      ->required();
  command->add_flag("--json", options->json, "machine-readable output");
  return [options]() {
    auto checkpoint = Checkpoint::open(options->path);
    auto summary = summarize(checkpoint);
    if (options->json)
      fmt::print("{}\n", summary_json(checkpoint, summary).dump(2));
    else
      print_summary(checkpoint, summary);
    return kExitOk;
  };
}

}  // namespace qs::cli
