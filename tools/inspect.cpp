// quantsmith inspect PATH: what is in a checkpoint, from headers and config alone.

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "cli_support.h"
#include "qs/ckpt/checkpoint.h"
#include "qs/ckpt/quantization_detection.h"
#include "qs/ckpt/tensor_name.h"

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

struct Summary {
  std::map<std::string, Tally> by_category;
  std::map<std::string, Tally> by_dtype;
  std::set<int> layers;
  std::set<int> mtp_layers;
  std::map<int, std::set<int>> experts_by_layer;
  QuantizationDetection quantization;
};

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
  return summary;
}

// The architecture keys a user checks first; absent keys are left out.
nlohmann::ordered_json config_summary(const nlohmann::json& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  if (!config.is_object()) return out;
  for (const char* key :
       {"model_type", "architectures", "num_hidden_layers", "num_nextn_predict_layers",
        "first_k_dense_replace", "hidden_size", "intermediate_size", "moe_intermediate_size",
        "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "num_attention_heads",
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
