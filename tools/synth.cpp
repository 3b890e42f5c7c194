// quantsmith synth --preset NAME --out DIR: random BF16 checkpoints of any model family
// (GLM-5, DeepSeek-V3, Qwen3-MoE) for tests and benchmarks. A preset gives every dimension; flags
// override single ones.

#include <fmt/format.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cli_support.h"
#include "progress_line.h"
#include "qs/ckpt/core/byte_size.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/synthetic_model.h"

namespace qs::cli {
namespace {

using Dimension = std::uint64_t SyntheticModelSpec::*;

struct DimensionFlag {
  const char* flag;
  Dimension field;
  const char* help;
};

// Every override is one row; the config key it sets is in the help text.
constexpr DimensionFlag kDimensionFlags[] = {
    {"--layers", &SyntheticModelSpec::num_hidden_layers, "decoder layers (num_hidden_layers)"},
    {"--dense-layers", &SyntheticModelSpec::first_k_dense_replace,
     "leading dense layers (first_k_dense_replace)"},
    {"--mtp-layers", &SyntheticModelSpec::num_nextn_predict_layers,
     "MTP layers after the decoder layers (num_nextn_predict_layers)"},
    {"--experts", &SyntheticModelSpec::n_routed_experts,
     "routed experts per MoE layer (n_routed_experts)"},
    {"--experts-per-token", &SyntheticModelSpec::num_experts_per_tok, "num_experts_per_tok"},
    {"--shared-experts", &SyntheticModelSpec::n_shared_experts, "n_shared_experts"},
    {"--hidden", &SyntheticModelSpec::hidden_size, "hidden_size"},
    {"--intermediate", &SyntheticModelSpec::intermediate_size,
     "dense MLP width (intermediate_size)"},
    {"--moe-intermediate", &SyntheticModelSpec::moe_intermediate_size,
     "expert width (moe_intermediate_size)"},
    {"--vocab", &SyntheticModelSpec::vocab_size, "vocab_size"},
    {"--heads", &SyntheticModelSpec::num_attention_heads, "num_attention_heads"},
    {"--q-lora-rank", &SyntheticModelSpec::q_lora_rank, "q_lora_rank"},
    {"--kv-lora-rank", &SyntheticModelSpec::kv_lora_rank, "kv_lora_rank"},
    {"--index-heads", &SyntheticModelSpec::index_n_heads, "indexer heads (index_n_heads)"},
    {"--index-head-dim", &SyntheticModelSpec::index_head_dim, "index_head_dim"},
    {"--index-topk", &SyntheticModelSpec::index_topk, "index_topk"},
    {"--kv-heads", &SyntheticModelSpec::num_key_value_heads,
     "GQA key/value heads (num_key_value_heads)"},
    {"--head-dim", &SyntheticModelSpec::head_dim, "GQA head width (head_dim)"},
    {"--groups", &SyntheticModelSpec::n_group, "expert groups for routing (n_group)"},
    {"--topk-group", &SyntheticModelSpec::topk_group, "expert groups kept per token (topk_group)"},
};
constexpr std::size_t kDimensionFlagCount = std::size(kDimensionFlags);

// A dimension bounded by another follows it down when only the bound was overridden, so that
// `--preset glm5 --layers 2 --experts 4` just works (3 dense layers and top-8 would not fit).
struct DimensionBound {
  Dimension dependent;
  Dimension bound;
};
constexpr DimensionBound kDimensionBounds[] = {
    {&SyntheticModelSpec::first_k_dense_replace, &SyntheticModelSpec::num_hidden_layers},
    {&SyntheticModelSpec::num_experts_per_tok, &SyntheticModelSpec::n_routed_experts},
    {&SyntheticModelSpec::topk_group, &SyntheticModelSpec::n_group},
};

struct SynthOptions {
  std::string preset;
  std::string out;
  std::array<std::optional<std::uint64_t>, kDimensionFlagCount> dimensions;
  std::optional<std::uint64_t> seed;
  std::string max_shard_size;
  std::string tokens;  // ROWSxSEQ: also write OUT/tokens.safetensors
  std::size_t threads = 0;
  bool list_presets = false;
  bool dry_run = false;
};

SyntheticModelSpec spec_from(const SynthOptions& options) {
  SyntheticModelSpec spec = synthetic_preset(options.preset).spec;
  for (std::size_t i = 0; i < kDimensionFlagCount; ++i)
    if (options.dimensions[i]) spec.*kDimensionFlags[i].field = *options.dimensions[i];
  auto overridden = [&](Dimension field) {
    for (std::size_t i = 0; i < kDimensionFlagCount; ++i)
      if (kDimensionFlags[i].field == field) return options.dimensions[i].has_value();
    return false;
  };
  for (const auto& bound : kDimensionBounds)
    if (!overridden(bound.dependent) && overridden(bound.bound))
      spec.*bound.dependent = std::min(spec.*bound.dependent, spec.*bound.bound);
  if (options.seed) spec.seed = *options.seed;
  if (!options.max_shard_size.empty())
    spec.max_shard_bytes = parse_byte_size(options.max_shard_size);
  validate_synthetic_spec(spec);
  return spec;
}

std::string model_shape_text(const SyntheticModelSpec& spec) {
  std::uint64_t dense = 0;
  for (std::uint64_t layer = 0; layer < spec.num_hidden_layers; ++layer)
    dense += spec.is_moe_layer(layer) ? 0 : 1;
  return fmt::format(
      "{}: layers {} ({} dense) + {} MTP, hidden {}, experts {} x {} (top-{}, {} shared), vocab {}",
      model_family(spec.family).name, spec.num_hidden_layers, dense, spec.num_nextn_predict_layers,
      spec.hidden_size, spec.n_routed_experts, spec.moe_intermediate_size, spec.num_experts_per_tok,
      spec.n_shared_experts, spec.vocab_size);
}

void list_presets() {
  for (const auto& preset : synthetic_presets()) {
    const auto tensors = tensor_specs(preset.spec);
    std::uint64_t bytes = 0;
    for (const auto& tensor : tensors) bytes += tensor.byte_size();
    fmt::print("{:<16} {:>11}  {:>7} tensors  {}\n", preset.name, human_bytes(bytes),
               tensors.size(), preset.description);
    fmt::print("{:<16} {}\n", "", model_shape_text(preset.spec));
  }
}

void print_dry_run(const SynthOptions& options, const SyntheticModelSpec& spec) {
  const auto tensors = tensor_specs(spec);
  std::uint64_t bytes = 0;
  for (const auto& tensor : tensors) bytes += tensor.byte_size();
  const auto shards = split_into_shards(tensors, spec.max_shard_bytes).size();
  fmt::print("{}: {} tensors, {} bytes ({}) in {} shard(s) of at most {}; seed {}\n",
             options.preset, tensors.size(), bytes, human_bytes(bytes), shards,
             human_bytes(spec.max_shard_bytes), spec.seed);
  fmt::print("{}\n", model_shape_text(spec));
}

struct TokenShape {
  std::uint64_t rows = 0;
  std::uint64_t seq = 0;
};

// "4x128" → 4 rows of 128 tokens.
TokenShape parse_token_shape(const std::string& text) {
  const auto cross = text.find('x');
  TokenShape shape;
  auto number = [&](std::string_view part, std::uint64_t& value) {
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), value);
    return error == std::errc{} && end == part.data() + part.size() && value > 0;
  };
  const std::string_view view(text);
  if (cross == std::string::npos || !number(view.substr(0, cross), shape.rows) ||
      !number(view.substr(cross + 1), shape.seq))
    throw_bad_input("cli.usage",
                    fmt::format("--tokens wants ROWSxSEQ with positive numbers, e.g. 4x128; got "
                                "'{}'",
                                text));
  return shape;
}

int run_synth(const SynthOptions& options) {
  if (options.list_presets) {
    list_presets();
    return kExitOk;
  }
  if (options.preset.empty())
    throw_bad_input("cli.usage", "synth needs --preset NAME (see --list-presets)");
  const SyntheticModelSpec spec = spec_from(options);
  if (options.dry_run) {
    print_dry_run(options, spec);
    return kExitOk;
  }
  if (options.out.empty()) throw_bad_input("cli.usage", "synth needs --out DIR");
  // Checked before the weights are written, so a typo costs nothing.
  const TokenShape token_shape =
      options.tokens.empty() ? TokenShape{} : parse_token_shape(options.tokens);

  std::optional<tbb::global_control> thread_limit;
  if (options.threads > 0)
    thread_limit.emplace(tbb::global_control::max_allowed_parallelism, options.threads);

  const std::uint64_t total_bytes = total_tensor_bytes(spec);
  const std::uint64_t total_tensors = tensor_specs(spec).size();
  ProgressLine progress("synth " + options.preset, total_bytes, total_tensors);
  const auto summary =
      write_synthetic_checkpoint(spec, options.out, [&](const SyntheticWriteProgress& done) {
        progress.update(done.bytes_done, done.tensors_done);
      });
  progress.finish();
  const double seconds = std::max(progress.elapsed_seconds(), 1e-9);
  fmt::print("wrote {}: {} tensors, {} in {} shard(s) to {} in {:.1f} s ({:.2f} GB/s)\n",
             options.preset, summary.tensors, human_bytes(summary.tensor_bytes), summary.shards,
             options.out, seconds, summary.tensor_bytes / 1e9 / seconds);
  if (!options.tokens.empty()) {
    const auto file = std::filesystem::path(options.out) / "tokens.safetensors";
    write_synthetic_tokens(spec, file, token_shape.rows, token_shape.seq);
    fmt::print("wrote {}: I32 calib and heldout [{}, {}], ids in [0, {})\n", file.string(),
               token_shape.rows, token_shape.seq, spec.vocab_size);
  }
  return kExitOk;
}

}  // namespace

SubcommandRunner register_synth(CLI::App& app) {
  auto options = std::make_shared<SynthOptions>();
  auto* command = app.add_subcommand(
      "synth",
      "Write a BF16 checkpoint of a model family (glm_moe_dsa, deepseek_v3, qwen3_moe) with "
      "random but realistic weights (real tensor names, shapes, dtypes and config.json), seeded "
      "and reproducible, streamed so any size needs little memory.");
  command->add_option(
      "--preset", options->preset,
      "starting point: tiny, glm5, glm5-moe-layer, bench-4g, deepseek-v3-tiny, deepseek-v3, "
      "qwen3-moe-tiny, qwen3-30b-a3b (see --list-presets)");
  command->add_option("--out", options->out, "output directory (must not exist or be empty)");
  for (std::size_t i = 0; i < kDimensionFlagCount; ++i)
    command->add_option(kDimensionFlags[i].flag, options->dimensions[i], kDimensionFlags[i].help);
  command->add_option("--seed", options->seed,
                      "random seed (default: the preset's, 0); same seed, same bytes");
  command->add_option("--max-shard-size", options->max_shard_size,
                      "largest shard, e.g. 5GB, 500MB, 2GiB or bytes (default: the preset's)");
  command->add_option("--tokens", options->tokens,
                      "also write OUT/tokens.safetensors: random I32 ids within the vocabulary, "
                      "tensors calib and heldout of ROWSxSEQ each (e.g. 4x128), for calibrate, "
                      "eval and calibrated quantize");
  command->add_option("--threads", options->threads, "worker threads (default: all cores)");
  command->add_flag("--list-presets", options->list_presets,
                    "print the presets with their sizes and exit");
  command->add_flag("--dry-run", options->dry_run, "print tensor count and size, write nothing");
  return [options]() { return run_synth(*options); };
}

}  // namespace qs::cli
