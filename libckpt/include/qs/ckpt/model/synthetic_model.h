#pragma once
// BF16 checkpoints of any model family (GLM-5, DeepSeek-V3, Qwen3-MoE) with random weights,
// for tests and benchmarks: the real tensor names, shapes, dtypes, tensor order and
// config.json keys (checkpoint_layout.h, docs/models/), at any size.
//
// Every value is a pure function of (seed, tensor name, element index), so any chunk of any
// tensor can be generated on its own, in parallel, and the bytes never depend on the thread
// count, the chunk size or the shard size. Writing streams in bounded chunks: a 20 GB model
// needs about as much memory as a 20 MB one.
//
// The values look like trained weights to a quantizer: Linear weights ~ N(0, 1/sqrt(in)) with a
// sparse heavier tail, per-row scale variation and a few input columns scaled 10-30x (the
// outlier channels that make absmax scaling hard); norm weights ≈ 1; small router biases.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/model/checkpoint_layout.h"
#include "qs/ckpt/io/safetensors.h"

namespace qs {

// A family's dimensions plus what synth needs to fill and shard them.
struct SyntheticModelSpec : ModelDimensions {
  std::uint64_t seed = 0;
  std::uint64_t max_shard_bytes = 5'000'000'000;  // huggingface_hub's "5GB"
};

struct SyntheticPreset {
  std::string_view name;
  std::string_view description;
  SyntheticModelSpec spec;
};

// The named starting points: tiny (the bundled glm5-tiny fixture's dimensions), glm5 (the
// real model, ~1.5 TB), glm5-moe-layer (one real-size MoE layer), bench-4g (~4.7 GB for I/O
// benchmarks); deepseek-v3-tiny, deepseek-v3, qwen3-moe-tiny, qwen3-30b-a3b for the other
// families.
std::span<const SyntheticPreset> synthetic_presets();
// Throws BadInput "synth.unknown_preset" listing the known names.
const SyntheticPreset& synthetic_preset(std::string_view name);

// validate_dimensions, plus a positive shard size.
void validate_synthetic_spec(const SyntheticModelSpec& spec);

// Bytes of elements [first_element, first_element + out.size() / element size) of one tensor.
void generate_synthetic_tensor(const SyntheticModelSpec& spec, std::string_view tensor_name,
                               std::uint64_t first_element, std::span<std::byte> out);

struct SyntheticWriteProgress {
  std::uint64_t tensors_done = 0;
  std::uint64_t tensors_total = 0;
  std::uint64_t bytes_done = 0;  // tensor bytes handed to the writer
  std::uint64_t bytes_total = 0;
};
using SyntheticProgressCallback = std::function<void(const SyntheticWriteProgress&)>;

struct SyntheticWriteSummary {
  std::uint64_t tensors = 0;
  std::uint64_t tensor_bytes = 0;
  std::uint64_t shards = 0;
};

// Writes config.json, generation_config.json and the size-capped shards (+ index, last) into
// `output_directory`, which must not exist or be empty (BadInput "synth.output_not_empty").
// `progress` is called from the calling thread after every chunk.
SyntheticWriteSummary write_synthetic_checkpoint(const SyntheticModelSpec& spec,
                                                 const std::filesystem::path& output_directory,
                                                 const SyntheticProgressCallback& progress = {});

// Random token ids to calibrate or evaluate a synthetic model with: a safetensors file with I32
// tensors `calib` and `heldout`, each [rows, seq], every id uniform in [0, vocab_size), a pure
// function of (seed, tensor name, index) like the weights (the bundled fixtures' tokens file
// has the same two tensors). Written atomically; BadInput "synth.invalid_tokens" for an empty
// shape or ids that do not fit I32.
void write_synthetic_tokens(const SyntheticModelSpec& spec, const std::filesystem::path& file,
                            std::uint64_t rows, std::uint64_t seq);

}  // namespace qs
