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
#include "qs/ckpt/validate/checkpoint_summary.h"

namespace qs::cli {
namespace {

struct InspectOptions {
  std::string path;
  bool json = false;
  bool verbose = false;
};

std::string ranges_of(const std::set<int>& values) {
  std::vector<std::string> parts;
  for (auto it = values.begin(); it != values.end();) {
    int first = *it, last = *it;
    while (++it != values.end() && *it == last + 1) last = *it;
    parts.push_back(first == last ? std::to_string(first) : fmt::format("{}-{}", first, last));
  }
  return parts.empty() ? "none" : fmt::format("{}", fmt::join(parts, ","));
}

std::string experts_text(const CheckpointSummary& summary) {
  std::set<std::size_t> counts;
  for (const auto& [layer, experts] : summary.experts_by_layer) counts.insert(experts.size());
  if (counts.empty()) return "none";
  if (counts.size() == 1)
    return fmt::format("{} per MoE layer in {} layers", *counts.begin(),
                       summary.experts_by_layer.size());
  return fmt::format("{} to {} per MoE layer", *counts.begin(), *counts.rbegin());
}

void print_tally(const char* title, const std::map<std::string, TensorTally>& tallies,
                 std::uint64_t total_bytes) {
  fmt::print("{}:\n", title);
  for (const auto& [name, tally] : tallies)
    fmt::print("  {:<16} {:>7} tensors  {:>11}  {:>5.1f}%  {}\n", name, tally.tensors,
               human_bytes(tally.bytes),
               100.0 * tally.bytes / std::max<std::uint64_t>(total_bytes, 1),
               fmt::join(tally.dtypes, ","));
}

std::string vq_row(const std::string& label, const VqTierUsage& usage) {
  return fmt::format("  {:<12} {:>7} modules  {:>14} weights  {:>11}  {:>6.3f} bpw", label,
                     usage.modules, usage.weights, human_bytes(usage.bytes),
                     usage.bits_per_weight());
}

// The tier histogram (per layer with --verbose) and the codebooks.
void print_vq(const CheckpointSummary& summary, bool verbose) {
  if (!summary.vq) return;
  const VqUsage& usage = *summary.vq;
  fmt::print("vector-quantized modules (codes + scales; codebooks apart):\n");
  if (!summary.vq_config_error.empty())
    fmt::print("  quantization_config.vq unreadable: {}\n", summary.vq_config_error);
  for (const auto& [tier, counted] : usage.tiers) fmt::print("{}\n", vq_row(tier, counted));
  fmt::print("{}\n", vq_row("all", usage.total));
  if (verbose)
    for (const auto& [layer, tiers] : usage.layers)
      for (const auto& [tier, counted] : tiers)
        fmt::print("{}\n", vq_row(fmt::format("layer {} {}", layer, tier), counted));
  for (const auto& listing : usage.codebooks)
    fmt::print("  codebook {} (tier {}, {} modules): {}\n", listing.tensor, listing.tier,
               listing.modules,
               listing.info ? fmt::format("{} {}", dtype_name(listing.info->dtype),
                                          shape_to_string(listing.info->shape))
                            : std::string("MISSING"));
}

void print_summary(const Checkpoint& checkpoint, const CheckpointSummary& summary, bool verbose) {
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
  print_vq(summary, verbose);
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
  command->add_flag("--verbose", options->verbose,
                    "more detail: the VQ tier histogram per layer (--json always has it)");
  return [options]() {
    auto checkpoint = Checkpoint::open(options->path);
    auto summary = summarize_checkpoint(checkpoint);
    if (options->json)
      fmt::print("{}\n", checkpoint_summary_json(checkpoint, summary).dump(2));
    else
      print_summary(checkpoint, summary, options->verbose);
    return kExitOk;
  };
}

}  // namespace qs::cli
