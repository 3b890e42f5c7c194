#include "qs/ckpt/model/synthetic_model.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <future>
#include <limits>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"

namespace qs {
namespace {

using Spec = SyntheticModelSpec;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; values are stored with memcpy");

// ---------------------------------------------------------------------------------------------
// Presets

Spec tiny_spec() {
  // Exactly tests/data/glm5-tiny, so its tensor list and config can be compared one to one.
  Spec spec;
  spec.vocab_size = 512;
  spec.hidden_size = 256;
  spec.intermediate_size = 512;
  spec.moe_intermediate_size = 128;
  spec.num_hidden_layers = 4;
  spec.first_k_dense_replace = 1;
  spec.num_nextn_predict_layers = 1;
  spec.num_attention_heads = 4;
  spec.q_lora_rank = 128;
  spec.kv_lora_rank = 128;
  spec.qk_nope_head_dim = 64;
  spec.qk_rope_head_dim = 32;
  spec.v_head_dim = 64;
  spec.index_n_heads = 16;
  spec.index_head_dim = 64;
  spec.index_topk = 2048;
  spec.n_routed_experts = 16;
  spec.n_shared_experts = 1;
  spec.num_experts_per_tok = 4;
  spec.max_position_embeddings = 4096;
  spec.bos_token_id = 256;
  spec.eos_token_ids = {257};
  spec.pad_token_id = 258;
  // Small enough that the 19 MB model gets two shards and an index, like the fixture.
  spec.max_shard_bytes = 10'000'000;
  return spec;
}

Spec glm5_spec() {
  // zai-org/GLM-5 config.json (docs/models/glm_moe_dsa.md, "config.json").
  Spec spec;
  spec.vocab_size = 154880;
  spec.hidden_size = 6144;
  spec.intermediate_size = 12288;
  spec.moe_intermediate_size = 2048;
  spec.num_hidden_layers = 78;
  spec.first_k_dense_replace = 3;
  spec.num_nextn_predict_layers = 1;
  spec.num_attention_heads = 64;
  spec.q_lora_rank = 2048;
  spec.kv_lora_rank = 512;
  spec.qk_nope_head_dim = 192;
  spec.qk_rope_head_dim = 64;
  spec.v_head_dim = 256;
  spec.index_n_heads = 32;
  spec.index_head_dim = 128;
  spec.index_topk = 2048;
  spec.n_routed_experts = 256;
  spec.n_shared_experts = 1;
  spec.num_experts_per_tok = 8;
  spec.max_position_embeddings = 202752;
  spec.eos_token_ids = {154820, 154827, 154829};
  spec.pad_token_id = 154820;
  return spec;
}

Spec glm5_moe_layer_spec() {
  // What a GPTQ benchmark chews on: 256 real-size experts, one attention block, no MTP.
  Spec spec = glm5_spec();
  spec.num_hidden_layers = 1;
  spec.first_k_dense_replace = 0;
  spec.num_nextn_predict_layers = 0;
  return spec;
}

Spec bench_4g_spec() {
  // ~4.7 GB with the GLM-5 mix of tensor sizes (a big embedding and head, a dense layer, many
  // mid-size expert matrices, tiny norms, an MTP layer) and several shards, for I/O benchmarks.
  Spec spec = glm5_spec();
  spec.vocab_size = 65536;
  spec.hidden_size = 2048;
  spec.intermediate_size = 6144;
  spec.moe_intermediate_size = 1024;
  spec.num_hidden_layers = 6;
  spec.first_k_dense_replace = 1;
  spec.num_attention_heads = 16;
  spec.q_lora_rank = 1024;
  spec.n_routed_experts = 48;
  spec.max_position_embeddings = 202752;
  spec.eos_token_ids = {65530};
  spec.pad_token_id = 65530;
  spec.max_shard_bytes = 1'000'000'000;
  return spec;
}

Spec deepseek_v3_spec() {
  // deepseek-ai/DeepSeek-V3 config.json (docs/models/deepseek_v3.md).
  Spec spec;
  static_cast<ModelDimensions&>(spec) = default_dimensions(ModelFamilyId::DeepseekV3);
  spec.vocab_size = 129280;
  spec.hidden_size = 7168;
  spec.intermediate_size = 18432;
  spec.moe_intermediate_size = 2048;
  spec.num_hidden_layers = 61;
  spec.first_k_dense_replace = 3;
  spec.num_nextn_predict_layers = 1;
  spec.num_attention_heads = 128;
  spec.num_key_value_heads = 128;
  spec.q_lora_rank = 1536;
  spec.kv_lora_rank = 512;
  spec.qk_nope_head_dim = 128;
  spec.qk_rope_head_dim = 64;
  spec.v_head_dim = 128;
  spec.n_routed_experts = 256;
  spec.n_shared_experts = 1;
  spec.num_experts_per_tok = 8;
  spec.n_group = 8;
  spec.topk_group = 4;
  spec.max_position_embeddings = 163840;
  spec.rope_scaling = RopeScaling{.type = "yarn",
                                  .factor = 40.0,
                                  .original_max_position_embeddings = 4096,
                                  .beta_fast = 32.0,
                                  .beta_slow = 1.0,
                                  .mscale = 1.0,
                                  .mscale_all_dim = 1.0};
  spec.bos_token_id = 0;
  spec.eos_token_ids = {1};
  return spec;
}

Spec deepseek_v3_tiny_spec() {
  // DeepSeek-V3's structure at glm5-tiny's sizes: grouped routing (4 groups, keep 2), a dense
  // layer, an MTP layer with its own embedding and head, yarn RoPE scaling.
  Spec spec = deepseek_v3_spec();
  spec.vocab_size = 512;
  spec.hidden_size = 256;
  spec.intermediate_size = 512;
  spec.moe_intermediate_size = 128;
  spec.num_hidden_layers = 4;
  spec.first_k_dense_replace = 1;
  spec.num_attention_heads = 4;
  spec.num_key_value_heads = 4;
  spec.q_lora_rank = 128;
  spec.kv_lora_rank = 128;
  spec.qk_nope_head_dim = 64;
  spec.qk_rope_head_dim = 32;
  spec.v_head_dim = 64;
  spec.n_routed_experts = 16;
  spec.num_experts_per_tok = 4;
  spec.n_group = 4;
  spec.topk_group = 2;
  spec.max_position_embeddings = 4096;
  spec.rope_scaling->factor = 4.0;
  spec.rope_scaling->original_max_position_embeddings = 1024;
  spec.max_shard_bytes = 10'000'000;
  return spec;
}

Spec qwen3_30b_a3b_spec() {
  // Qwen/Qwen3-30B-A3B config.json (docs/models/qwen3_moe.md).
  Spec spec;
  static_cast<ModelDimensions&>(spec) = default_dimensions(ModelFamilyId::Qwen3Moe);
  spec.vocab_size = 151936;
  spec.hidden_size = 2048;
  spec.intermediate_size = 6144;
  spec.moe_intermediate_size = 768;
  spec.num_hidden_layers = 48;
  spec.num_attention_heads = 32;
  spec.num_key_value_heads = 4;
  spec.head_dim = 128;
  spec.n_routed_experts = 128;
  spec.num_experts_per_tok = 8;
  spec.norm_topk_prob = true;
  spec.max_position_embeddings = 40960;
  spec.rope_theta = 1'000'000.0;
  spec.bos_token_id = 151643;
  spec.eos_token_ids = {151645};
  return spec;
}

Spec qwen3_moe_tiny_spec() {
  // Qwen3-MoE's structure at glm5-tiny's sizes; layer 0 listed in mlp_only_layers so the
  // dense path exists too (the released models have none).
  Spec spec = qwen3_30b_a3b_spec();
  spec.vocab_size = 512;
  spec.hidden_size = 256;
  spec.intermediate_size = 512;
  spec.moe_intermediate_size = 128;
  spec.num_hidden_layers = 4;
  spec.mlp_only_layers = {0};
  spec.num_attention_heads = 4;
  spec.num_key_value_heads = 2;
  spec.head_dim = 64;
  spec.n_routed_experts = 16;
  spec.num_experts_per_tok = 4;
  spec.max_position_embeddings = 4096;
  spec.bos_token_id = 256;
  spec.eos_token_ids = {257};
  spec.max_shard_bytes = 10'000'000;
  return spec;
}

const std::vector<SyntheticPreset>& preset_table() {
  static const std::vector<SyntheticPreset> presets = {
      {"tiny", "the bundled glm5-tiny fixture's dimensions, names, shapes and dtypes", tiny_spec()},
      {"glm5", "real GLM-5 (78 layers + MTP, 256 experts, hidden 6144); shrink it with overrides",
       glm5_spec()},
      {"glm5-moe-layer", "one real-size GLM-5 MoE layer (256 experts, no dense layer, no MTP)",
       glm5_moe_layer_spec()},
      {"bench-4g", "GLM-5-shaped, ~4.7 GB in 1 GB shards, for I/O benchmarks", bench_4g_spec()},
      {"deepseek-v3-tiny",
       "DeepSeek-V3 structure (grouped routing, MTP with embed/head) at tiny size",
       deepseek_v3_tiny_spec()},
      {"deepseek-v3", "real DeepSeek-V3 (61 layers + MTP, 256 experts in 8 groups, hidden 7168)",
       deepseek_v3_spec()},
      {"qwen3-moe-tiny", "Qwen3-MoE structure (GQA with q/k norm, softmax routing) at tiny size",
       qwen3_moe_tiny_spec()},
      {"qwen3-30b-a3b", "real Qwen3-30B-A3B (48 layers, 128 experts, 32 q / 4 kv heads)",
       qwen3_30b_a3b_spec()},
  };
  return presets;
}

// ---------------------------------------------------------------------------------------------
// Values. A counter-based generator: element i of a tensor is mix64(stream + i·golden), i.e.
// the i-th output of a splitmix64 sequence keyed by (seed, tensor name). Nothing carries over
// from one element to the next, so any range can be produced independently.

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;

constexpr std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

constexpr std::uint64_t fnv1a64(std::string_view text) {
  std::uint64_t hash = 0xCBF29CE484222325ull;
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001B3ull;
  }
  return hash;
}

// [0, 1) with 24 bits, exact in f32.
inline float unit_uniform(std::uint64_t bits) {
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

// A unit-variance sample from 64 random bits: the sum of four 14-bit uniforms (Irwin-Hall,
// close to normal within ±3.5σ), with one draw in 256 stretched ×3 for the sparse heavier tail
// trained weights have (kurtosis ≈ 3.6; the absmax of a 128-element group is ≈ 2.6σ at the
// median and ≈ 5.8σ at the 99th percentile, before outlier columns). Integer arithmetic up to
// exactly rounded float products, so the bytes are the same on every machine (unlike anything
// built on log/sin/cos) as long as a*b+c is not contracted into an FMA, which GCC and Clang
// do not do without -ffp-contract=fast or an FMA target flag.
constexpr std::uint64_t kUniformMask = 0x3FFF;
constexpr float kTailStretch = 3.0f;
// 1 / sqrt(Var(sum) · E[stretch²]) with Var(sum) = 4·(2^28 - 1)/12, E[stretch²] = (255 + 9)/256.
const float kUnitScale = static_cast<float>(1.0 / std::sqrt((268435455.0 / 3.0) * (264.0 / 256.0)));

inline float unit_sample(std::uint64_t bits) {
  const auto sum =
      static_cast<std::int32_t>((bits & kUniformMask) + ((bits >> 14) & kUniformMask) +
                                ((bits >> 28) & kUniformMask) + ((bits >> 42) & kUniformMask));
  const float centred = static_cast<float>(sum - 2 * static_cast<std::int32_t>(kUniformMask));
  const float stretch = (bits >> 56) == 0 ? kTailStretch : 1.0f;
  return centred * stretch * kUnitScale;
}

// How a kind's values are distributed: value = mean + sigma · row_scale · column_scale · z.
struct ValueDistribution {
  float mean;
  float sigma;
  bool row_scales;       // rows (output channels) differ in scale by up to ±25%
  bool outlier_columns;  // ~0.5% of input columns (at least one) scaled 10-30x
};

// Linear: Kaiming-like 1/sqrt(in), which lands at 0.01-0.03 for GLM-5 widths like trained
// weights; embeddings at the usual 0.02 initializer range; norm gains around 1.
ValueDistribution distribution_for(TensorKind kind, std::uint64_t columns) {
  switch (kind) {
    case TensorKind::Linear:
      return {0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(columns))), true, true};
    case TensorKind::Embedding:
      return {0.0f, 0.02f, false, false};
    case TensorKind::NormWeight:
      return {1.0f, 0.05f, false, false};
    case TensorKind::NormBias:
      return {0.0f, 0.02f, false, false};
    case TensorKind::RouterBias:
      return {0.0f, 0.01f, false, false};
  }
  throw Error(ErrorClass::Internal, "synth.value_kind", "unknown value kind");
}

constexpr std::uint64_t kOutlierColumnsPerMille = 5;
constexpr float kOutlierMinScale = 10.0f;
constexpr float kOutlierScaleRange = 20.0f;

// Everything a range of elements of one tensor needs, derived from (seed, name) alone.
struct TensorStreams {
  std::uint64_t values;
  std::uint64_t rows;
  std::uint64_t columns;
};

TensorStreams streams_for(std::uint64_t seed, std::string_view name) {
  const std::uint64_t base = mix64(fnv1a64(name) ^ mix64(seed + kGolden));
  return {mix64(base + 1 * kGolden), mix64(base + 2 * kGolden), mix64(base + 3 * kGolden)};
}

std::vector<float> column_scales(const ValueDistribution& distribution, std::uint64_t columns,
                                 std::uint64_t stream) {
  std::vector<float> scales(columns, 1.0f);
  if (!distribution.outlier_columns) return scales;
  const std::uint64_t wanted =
      std::min(columns, std::max<std::uint64_t>(1, columns * kOutlierColumnsPerMille / 1000));
  std::uint64_t chosen = 0;
  for (std::uint64_t draw = 0; chosen < wanted; ++draw) {
    const std::uint64_t bits = mix64(stream + draw * kGolden);
    const std::uint64_t column = (bits & 0xFFFFFFFFull) % columns;
    if (scales[column] != 1.0f) continue;
    scales[column] = kOutlierMinScale + kOutlierScaleRange * unit_uniform(bits);
    ++chosen;
  }
  return scales;
}

float row_scale(const ValueDistribution& distribution, std::uint64_t row, std::uint64_t stream) {
  if (!distribution.row_scales) return distribution.sigma;
  return distribution.sigma * (0.75f + 0.5f * unit_uniform(mix64(stream + row * kGolden)));
}

// What one tensor's values need, derived from (seed, name, kind, shape) alone.
struct ValueSource {
  ValueDistribution distribution;
  TensorStreams streams;
  std::uint64_t columns;
  std::vector<float> column_scales;
};

inline std::uint16_t encode_bf16(float value) { return f32_to_bf16(value); }
inline float encode_f32(float value) { return value; }

// Elements [begin, end) of the tensor into `destination`, a row segment at a time and in
// small blocks: values first, then the encoding in a loop of its own. Fused into one loop,
// GCC turns the bf16 rounding decision into a branch that random data mispredicts half the
// time (2x slower overall); alone it compiles branch-free and vectorizes.
template <typename Code, Code (*encode)(float)>
void fill_elements(const ValueSource& source, std::uint64_t begin, std::uint64_t end,
                   std::byte* destination) {
  constexpr std::uint64_t kBlock = 512;
  std::array<float, kBlock> values;
  std::array<Code, kBlock> codes;
  const std::uint64_t columns = source.columns;
  const float mean = source.distribution.mean;
  std::uint64_t element = begin;
  while (element < end) {
    const std::uint64_t row = element / columns;
    const float row_sigma = row_scale(source.distribution, row, source.streams.rows);
    const std::uint64_t segment_end = std::min(end, (row + 1) * columns);
    for (; element < segment_end;) {
      const std::uint64_t count = std::min(kBlock, segment_end - element);
      const float* scales = source.column_scales.data() + element % columns;
      for (std::uint64_t i = 0; i < count; ++i)
        values[i] = mean + row_sigma * scales[i] *
                               unit_sample(mix64(source.streams.values + (element + i) * kGolden));
      for (std::uint64_t i = 0; i < count; ++i) codes[i] = encode(values[i]);
      std::memcpy(destination, codes.data(), count * sizeof(Code));
      destination += count * sizeof(Code);
      element += count;
    }
  }
}

using FillElements = void (*)(const ValueSource&, std::uint64_t, std::uint64_t, std::byte*);

struct ValueEncoding {
  DType dtype;
  FillElements fill;
};
constexpr ValueEncoding kValueEncodings[] = {
    {DType::BF16, fill_elements<std::uint16_t, encode_bf16>},
    {DType::F32, fill_elements<float, encode_f32>},
};

FillElements fill_for(const TensorSpec& tensor) {
  for (const auto& encoding : kValueEncodings)
    if (encoding.dtype == tensor.dtype) return encoding.fill;
  throw Error(ErrorClass::Internal, "synth.dtype", "no synthetic values for this dtype", {},
              tensor.name);
}

constexpr std::uint64_t kParallelGrainElements = 1 << 16;

void generate_values(std::uint64_t seed, const LayoutTensor& tensor, std::uint64_t first_element,
                     std::span<std::byte> out) {
  const TensorSpec& spec = tensor.spec;
  const std::uint64_t element_bytes = dtype_bits(spec.dtype) / 8;
  const std::uint64_t count = out.size() / element_bytes;
  if (out.size() % element_bytes != 0 || first_element + count > element_count(spec.shape))
    throw Error(ErrorClass::Internal, "synth.range", "value range outside the tensor", {},
                spec.name);
  ValueSource source;
  source.columns = spec.shape.empty() ? 1 : spec.shape.back();
  source.distribution = distribution_for(tensor.kind, source.columns);
  source.streams = streams_for(seed, spec.name);
  source.column_scales = column_scales(source.distribution, source.columns, source.streams.columns);
  const FillElements fill = fill_for(spec);

  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, count, kParallelGrainElements),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
                      fill(source, first_element + range.begin(), first_element + range.end(),
                           out.data() + range.begin() * element_bytes);
                    });
}

// ---------------------------------------------------------------------------------------------
// Writing

constexpr std::uint64_t kChunkBytes = 64ull << 20;

// Walks the concatenation of all tensors' bytes, in checkpoint order, one buffer at a time.
// Small tensors share a buffer (one write call for many of them); large ones span several.
class ChunkCursor {
 public:
  ChunkCursor(std::uint64_t seed, const std::vector<LayoutTensor>& tensors)
      : seed_(seed), tensors_(tensors) {
    std::uint64_t end = 0;
    for (const auto& tensor : tensors_) tensor_ends_.push_back(end += tensor.spec.byte_size());
  }

  bool at_end() const { return tensor_ >= tensors_.size(); }

  // Generates the next bytes into `buffer`, whole elements only, and returns the filled part.
  std::span<const std::byte> fill(std::vector<std::byte>& buffer) {
    std::uint64_t used = 0;
    while (!at_end()) {
      const LayoutTensor& tensor = tensors_[tensor_];
      const std::uint64_t element_bytes = dtype_bits(tensor.spec.dtype) / 8;
      const std::uint64_t left = element_count(tensor.spec.shape) - element_;
      const std::uint64_t fits = (buffer.size() - used) / element_bytes;
      const std::uint64_t count = std::min(left, fits);
      if (count == 0 && left > 0) break;  // buffer full
      generate_values(seed_, tensor, element_,
                      std::span(buffer).subspan(used, count * element_bytes));
      used += count * element_bytes;
      element_ += count;
      if (element_ == element_count(tensor.spec.shape)) {
        ++tensor_;
        element_ = 0;
      }
    }
    return std::span<const std::byte>(buffer).first(used);
  }

  // How many tensors lie entirely within the first `bytes` bytes.
  std::uint64_t tensors_within(std::uint64_t bytes) const {
    return static_cast<std::uint64_t>(
        std::upper_bound(tensor_ends_.begin(), tensor_ends_.end(), bytes) - tensor_ends_.begin());
  }

 private:
  std::uint64_t seed_;
  const std::vector<LayoutTensor>& tensors_;
  std::vector<std::uint64_t> tensor_ends_;
  std::size_t tensor_ = 0;
  std::uint64_t element_ = 0;
};

void require_empty_output_directory(const std::filesystem::path& directory) {
  std::error_code error;
  const auto status = std::filesystem::status(directory, error);
  if (!std::filesystem::exists(status)) return;
  if (!std::filesystem::is_directory(status))
    throw_bad_input("synth.output_not_directory", "output path exists and is not a directory",
                    directory.string());
  if (!std::filesystem::is_empty(directory))
    throw_bad_input("synth.output_not_empty",
                    "output directory is not empty; synth writes only into a new or empty "
                    "directory, so it never mixes with or overwrites other files",
                    directory.string());
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void validate_synthetic_spec(const SyntheticModelSpec& spec) {
  validate_dimensions(spec);
  if (spec.max_shard_bytes == 0)
    throw_bad_input("synth.invalid_spec", "the maximum shard size must be positive");
}

std::span<const SyntheticPreset> synthetic_presets() { return preset_table(); }

const SyntheticPreset& synthetic_preset(std::string_view name) {
  std::string known;
  for (const auto& preset : preset_table()) {
    if (preset.name == name) return preset;
    known += known.empty() ? "" : ", ";
    known += preset.name;
  }
  throw_bad_input("synth.unknown_preset",
                  fmt::format("unknown preset '{}' (known: {})", name, known));
}

void generate_synthetic_tensor(const SyntheticModelSpec& spec, std::string_view tensor_name,
                               std::uint64_t first_element, std::span<std::byte> out) {
  for (const auto& tensor : checkpoint_layout(spec))
    if (tensor.spec.name == tensor_name)
      return generate_values(spec.seed, tensor, first_element, out);
  throw_bad_input("synth.unknown_tensor", "the synthetic model has no such tensor", {},
                  std::string(tensor_name));
}

SyntheticWriteSummary write_synthetic_checkpoint(const SyntheticModelSpec& spec,
                                                 const std::filesystem::path& output_directory,
                                                 const SyntheticProgressCallback& progress) {
  validate_synthetic_spec(spec);
  const std::vector<LayoutTensor> tensors = checkpoint_layout(spec);
  require_empty_output_directory(output_directory);
  std::filesystem::create_directories(output_directory);
  // Configs first, weights after: the index (or the single shard) written last is what marks
  // the checkpoint complete.
  write_file_atomically(output_directory / "config.json", config_json(spec).dump(2) + "\n");
  write_file_atomically(output_directory / "generation_config.json",
                        generation_config_json(spec).dump(2) + "\n");

  std::vector<TensorSpec> specs;
  SyntheticWriteProgress done;
  for (const auto& tensor : tensors) {
    specs.push_back(tensor.spec);
    done.bytes_total += tensor.spec.byte_size();
  }
  done.tensors_total = tensors.size();
  ShardedCheckpointWriter writer(output_directory, specs, spec.max_shard_bytes);

  // Two buffers: the next chunk is generated (on all cores) while the previous one is written
  // (on one more thread), so the disk and the CPUs work at the same time.
  const std::uint64_t buffer_bytes = std::min(done.bytes_total, kChunkBytes);
  std::array<std::vector<std::byte>, 2> buffers{std::vector<std::byte>(buffer_bytes),
                                                std::vector<std::byte>(buffer_bytes)};
  ChunkCursor cursor(spec.seed, tensors);
  std::future<void> pending_write;
  std::uint64_t pending_bytes = 0;
  auto finish_pending_write = [&] {
    if (!pending_write.valid()) return;
    pending_write.get();
    done.bytes_done += pending_bytes;
    done.tensors_done = cursor.tensors_within(done.bytes_done);
    if (progress) progress(done);
  };
  for (std::size_t current = 0; !cursor.at_end(); current ^= 1) {
    const std::span<const std::byte> chunk = cursor.fill(buffers[current]);
    finish_pending_write();
    pending_bytes = chunk.size();
    pending_write = std::async(std::launch::async, [&writer, chunk] { writer.write(chunk); });
  }
  finish_pending_write();
  writer.finish();
  return {tensors.size(), done.bytes_total, writer.shard_plan().size()};
}

void write_synthetic_tokens(const SyntheticModelSpec& spec, const std::filesystem::path& file,
                            std::uint64_t rows, std::uint64_t seq) {
  if (rows == 0 || seq == 0)
    throw_bad_input("synth.invalid_tokens",
                    fmt::format("token batch {}x{} is empty; give ROWSxSEQ with both positive",
                                rows, seq),
                    file.string());
  if (spec.vocab_size == 0 || spec.vocab_size - 1 > std::numeric_limits<std::int32_t>::max())
    throw_bad_input("synth.invalid_tokens",
                    fmt::format("vocab_size {} does not fit I32 token ids", spec.vocab_size),
                    file.string());
  const std::array<std::string, 2> names{"calib", "heldout"};
  std::vector<TensorSpec> specs;
  for (const auto& name : names) specs.push_back({name, DType::I32, {rows, seq}});
  SafetensorsWriter writer(file, specs);
  std::vector<std::int32_t> ids(rows * seq);
  for (const auto& name : names) {
    // Keyed by a name no weight has, so the ids are independent of every tensor's values.
    const std::uint64_t stream = streams_for(spec.seed, "synthetic-tokens." + name).values;
    for (std::uint64_t i = 0; i < ids.size(); ++i)
      ids[i] = static_cast<std::int32_t>(mix64(stream + i * kGolden) % spec.vocab_size);
    writer.write_tensor(name, std::as_bytes(std::span(ids)));
  }
  writer.commit();
}

}  // namespace qs
