#include "qs/ckpt/synthetic_model.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <future>

#include "qs/ckpt/checkpoint.h"
#include "qs/ckpt/codecs.h"
#include "qs/ckpt/error.h"
#include "qs/ckpt/file_io.h"

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
  // zai-org/GLM-5 config.json (model-glm5.md §1.1).
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

const std::vector<SyntheticPreset>& preset_table() {
  static const std::vector<SyntheticPreset> presets = {
      {"tiny", "the bundled glm5-tiny fixture's dimensions, names, shapes and dtypes", tiny_spec()},
      {"glm5", "real GLM-5 (78 layers + MTP, 256 experts, hidden 6144); shrink it with overrides",
       glm5_spec()},
      {"glm5-moe-layer", "one real-size GLM-5 MoE layer (256 experts, no dense layer, no MTP)",
       glm5_moe_layer_spec()},
      {"bench-4g", "GLM-5-shaped, ~4.7 GB in 1 GB shards, for I/O benchmarks", bench_4g_spec()},
  };
  return presets;
}

// ---------------------------------------------------------------------------------------------
// Validation: one row per requirement, so an error names the rule that failed.

bool has_dense_layers(const Spec& s) { return s.first_k_dense_replace > 0; }
bool has_moe_layers(const Spec& s) {
  return s.first_k_dense_replace < s.num_hidden_layers || s.num_nextn_predict_layers > 0;
}

struct SpecRequirement {
  bool (*holds)(const Spec&);
  std::string_view text;
};

constexpr SpecRequirement kSpecRequirements[] = {
    {[](const Spec& s) { return s.hidden_size > 0; }, "hidden_size > 0"},
    {[](const Spec& s) { return s.num_hidden_layers > 0; }, "num_hidden_layers > 0"},
    {[](const Spec& s) { return s.first_k_dense_replace <= s.num_hidden_layers; },
     "first_k_dense_replace <= num_hidden_layers"},
    {[](const Spec& s) { return s.num_attention_heads > 0; }, "num_attention_heads > 0"},
    {[](const Spec& s) { return s.q_lora_rank > 0 && s.kv_lora_rank > 0; },
     "q_lora_rank > 0 and kv_lora_rank > 0"},
    {[](const Spec& s) { return s.qk_nope_head_dim > 0 && s.v_head_dim > 0; },
     "qk_nope_head_dim > 0 and v_head_dim > 0"},
    {[](const Spec& s) { return s.qk_rope_head_dim > 0 && s.qk_rope_head_dim % 2 == 0; },
     "qk_rope_head_dim even and > 0 (RoPE rotates pairs)"},
    {[](const Spec& s) { return s.index_n_heads > 0; }, "index_n_heads > 0"},
    {[](const Spec& s) { return s.index_head_dim > s.qk_rope_head_dim; },
     "index_head_dim > qk_rope_head_dim (the indexer splits [rope | nope])"},
    {[](const Spec& s) { return s.index_topk > 0; }, "index_topk > 0"},
    {[](const Spec& s) { return !has_dense_layers(s) || s.intermediate_size > 0; },
     "intermediate_size > 0 when there are dense layers"},
    {[](const Spec& s) {
       return !has_moe_layers(s) || (s.n_routed_experts > 0 && s.moe_intermediate_size > 0);
     },
     "n_routed_experts > 0 and moe_intermediate_size > 0 when there are MoE layers"},
    {[](const Spec& s) {
       return !has_moe_layers(s) ||
              (s.num_experts_per_tok > 0 && s.num_experts_per_tok <= s.n_routed_experts);
     },
     "0 < num_experts_per_tok <= n_routed_experts"},
    {[](const Spec& s) {
       return s.n_group > 0 && s.topk_group > 0 && s.topk_group <= s.n_group &&
              (!has_moe_layers(s) || s.n_routed_experts % s.n_group == 0);
     },
     "0 < topk_group <= n_group, n_group divides n_routed_experts"},
    {[](const Spec& s) { return s.max_position_embeddings > 0; }, "max_position_embeddings > 0"},
    {[](const Spec& s) { return s.max_shard_bytes > 0; }, "max shard size > 0"},
    {[](const Spec& s) {
       std::size_t specials =
           s.eos_token_ids.size() + (s.bos_token_id ? 1 : 0) + (s.pad_token_id ? 1 : 0);
       return s.vocab_size > 0 && s.vocab_size >= specials;
     },
     "vocab_size > 0 and large enough for the special tokens"},
};

// ---------------------------------------------------------------------------------------------
// Tensor layout. Each tensor comes from a template row: its name within its block, dtype, the
// kind of values it holds and its shape as a function of the spec.

enum class ValueKind {
  Linear,      // nn.Linear weight [out, in]
  Embedding,   // token embedding rows
  NormWeight,  // RMSNorm / LayerNorm gain
  NormBias,    // LayerNorm shift
  RouterBias,  // e_score_correction_bias, F32
};

using ShapeOf = Shape (*)(const Spec&);

struct TensorTemplate {
  std::string_view suffix;
  DType dtype;
  ValueKind kind;
  ShapeOf shape;
};

struct SyntheticTensor {
  TensorSpec spec;
  ValueKind kind;
};

using enum ValueKind;

// One row per tensor: kept compact by hand, clang-format would spread each over four lines.
// clang-format off
constexpr TensorTemplate kHeadTensors[] = {
    {"model.embed_tokens.weight", DType::BF16, Embedding,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};

// model-glm5.md §2.2, in the order of the released checkpoints.
constexpr TensorTemplate kAttentionTensors[] = {
    {"input_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"self_attn.q_a_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.q_lora_rank, s.hidden_size}; }},
    {"self_attn.q_a_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.q_lora_rank}; }},
    {"self_attn.q_b_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.num_attention_heads * (s.qk_nope_head_dim + s.qk_rope_head_dim),
                    s.q_lora_rank};
     }},
    {"self_attn.kv_a_proj_with_mqa.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.kv_lora_rank + s.qk_rope_head_dim, s.hidden_size}; }},
    {"self_attn.kv_a_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.kv_lora_rank}; }},
    {"self_attn.kv_b_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.num_attention_heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank};
     }},
    {"self_attn.o_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.num_attention_heads * s.v_head_dim}; }},
    {"self_attn.indexer.wq_b.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_n_heads * s.index_head_dim, s.q_lora_rank}; }},
    {"self_attn.indexer.wk.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_head_dim, s.hidden_size}; }},
    {"self_attn.indexer.k_norm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.index_head_dim}; }},
    {"self_attn.indexer.k_norm.bias", DType::BF16, NormBias,
     [](const Spec& s) { return Shape{s.index_head_dim}; }},
    {"self_attn.indexer.weights_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_n_heads, s.hidden_size}; }},
    {"post_attention_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
};

constexpr TensorTemplate kDenseMlpTensors[] = {
    {"mlp.gate_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.intermediate_size, s.hidden_size}; }},
    {"mlp.up_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.intermediate_size, s.hidden_size}; }},
    {"mlp.down_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.intermediate_size}; }},
};

constexpr TensorTemplate kRouterTensors[] = {
    {"mlp.gate.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.n_routed_experts, s.hidden_size}; }},
    // F32 in the official BF16 release: HF keeps it in fp32 strictly (model-glm5.md §2.3).
    {"mlp.gate.e_score_correction_bias", DType::F32, RouterBias,
     [](const Spec& s) { return Shape{s.n_routed_experts}; }},
};

// Below "mlp.experts.{e}.".
constexpr TensorTemplate kExpertTensors[] = {
    {"gate_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.moe_intermediate_size, s.hidden_size}; }},
    {"up_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.moe_intermediate_size, s.hidden_size}; }},
    {"down_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.moe_intermediate_size}; }},
};

constexpr TensorTemplate kSharedExpertTensors[] = {
    {"mlp.shared_experts.gate_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.moe_intermediate_size * s.n_shared_experts, s.hidden_size};
     }},
    {"mlp.shared_experts.up_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.moe_intermediate_size * s.n_shared_experts, s.hidden_size};
     }},
    {"mlp.shared_experts.down_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.hidden_size, s.moe_intermediate_size * s.n_shared_experts};
     }},
};

// model-glm5.md §2.5: what an MTP layer has beyond a MoE decoder layer. No embed_tokens or
// shared_head.head: like GLM-5, those are shared with the main model.
constexpr TensorTemplate kMtpTensors[] = {
    {"enorm.weight", DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"hnorm.weight", DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"eh_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, 2 * s.hidden_size}; }},
    {"shared_head.norm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
};

constexpr TensorTemplate kTailTensors[] = {
    {"model.norm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"lm_head.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};
// clang-format on

void append(std::vector<SyntheticTensor>& out, const Spec& spec, std::string_view prefix,
            std::span<const TensorTemplate> templates) {
  for (const auto& row : templates)
    out.push_back(
        {{fmt::format("{}{}", prefix, row.suffix), row.dtype, row.shape(spec)}, row.kind});
}

std::vector<SyntheticTensor> synthetic_tensors(const Spec& spec) {
  validate_synthetic_spec(spec);
  std::vector<SyntheticTensor> tensors;
  append(tensors, spec, "", kHeadTensors);
  const std::uint64_t layer_count = spec.num_hidden_layers + spec.num_nextn_predict_layers;
  for (std::uint64_t layer = 0; layer < layer_count; ++layer) {
    const std::string prefix = fmt::format("model.layers.{}.", layer);
    append(tensors, spec, prefix, kAttentionTensors);
    // MTP layers are MoE layers too (they sit past first_k_dense_replace).
    if (layer < spec.first_k_dense_replace) {
      append(tensors, spec, prefix, kDenseMlpTensors);
    } else {
      append(tensors, spec, prefix, kRouterTensors);
      for (std::uint64_t expert = 0; expert < spec.n_routed_experts; ++expert)
        append(tensors, spec, fmt::format("{}mlp.experts.{}.", prefix, expert), kExpertTensors);
      if (spec.n_shared_experts > 0) append(tensors, spec, prefix, kSharedExpertTensors);
    }
    if (layer >= spec.num_hidden_layers) append(tensors, spec, prefix, kMtpTensors);
  }
  append(tensors, spec, "", kTailTensors);
  return tensors;
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
ValueDistribution distribution_for(ValueKind kind, std::uint64_t columns) {
  switch (kind) {
    case Linear:
      return {0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(columns))), true, true};
    case Embedding:
      return {0.0f, 0.02f, false, false};
    case NormWeight:
      return {1.0f, 0.05f, false, false};
    case NormBias:
      return {0.0f, 0.02f, false, false};
    case RouterBias:
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

void generate_values(std::uint64_t seed, const SyntheticTensor& tensor, std::uint64_t first_element,
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
  ChunkCursor(std::uint64_t seed, const std::vector<SyntheticTensor>& tensors)
      : seed_(seed), tensors_(tensors) {
    std::uint64_t end = 0;
    for (const auto& tensor : tensors_) tensor_ends_.push_back(end += tensor.spec.byte_size());
  }

  bool at_end() const { return tensor_ >= tensors_.size(); }

  // Generates the next bytes into `buffer`, whole elements only, and returns the filled part.
  std::span<const std::byte> fill(std::vector<std::byte>& buffer) {
    std::uint64_t used = 0;
    while (!at_end()) {
      const SyntheticTensor& tensor = tensors_[tensor_];
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
  const std::vector<SyntheticTensor>& tensors_;
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

nlohmann::ordered_json json_number(double value) {
  // 1000000 rather than 1000000.0, as Python's json writes an int-valued config entry.
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.0e15)
    return static_cast<std::int64_t>(value);
  return value;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

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

void validate_synthetic_spec(const SyntheticModelSpec& spec) {
  for (const auto& requirement : kSpecRequirements)
    if (!requirement.holds(spec))
      throw_bad_input("synth.invalid_spec",
                      fmt::format("impossible model dimensions: need {}", requirement.text));
}

SpecialTokenIds special_token_ids(const SyntheticModelSpec& spec) {
  std::vector<std::uint64_t> outside;
  auto note = [&](std::uint64_t id) {
    if (id >= spec.vocab_size) outside.push_back(id);
  };
  if (spec.bos_token_id) note(*spec.bos_token_id);
  for (auto id : spec.eos_token_ids) note(id);
  if (spec.pad_token_id) note(*spec.pad_token_id);
  std::sort(outside.begin(), outside.end());
  outside.erase(std::unique(outside.begin(), outside.end()), outside.end());
  auto fit = [&](std::uint64_t id) {
    auto at = std::lower_bound(outside.begin(), outside.end(), id);
    if (at == outside.end() || *at != id) return id;
    return spec.vocab_size - outside.size() + static_cast<std::uint64_t>(at - outside.begin());
  };
  SpecialTokenIds ids;
  if (spec.bos_token_id) ids.bos = fit(*spec.bos_token_id);
  for (auto id : spec.eos_token_ids) ids.eos.push_back(fit(id));
  if (spec.pad_token_id) ids.pad = fit(*spec.pad_token_id);
  return ids;
}

nlohmann::ordered_json config_json(const SyntheticModelSpec& spec) {
  validate_synthetic_spec(spec);
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::ordered_json config;
  config["architectures"] = {"GlmMoeDsaForCausalLM"};
  config["model_type"] = "glm_moe_dsa";
  config["dtype"] = "bfloat16";
  config["vocab_size"] = spec.vocab_size;
  config["hidden_size"] = spec.hidden_size;
  config["intermediate_size"] = spec.intermediate_size;
  config["moe_intermediate_size"] = spec.moe_intermediate_size;
  config["num_hidden_layers"] = spec.num_hidden_layers;
  config["first_k_dense_replace"] = spec.first_k_dense_replace;
  config["moe_layer_freq"] = 1;
  config["num_nextn_predict_layers"] = spec.num_nextn_predict_layers;
  config["num_attention_heads"] = spec.num_attention_heads;
  config["num_key_value_heads"] = spec.num_attention_heads;  // MLA expands to MHA
  config["q_lora_rank"] = spec.q_lora_rank;
  config["kv_lora_rank"] = spec.kv_lora_rank;
  config["qk_nope_head_dim"] = spec.qk_nope_head_dim;
  config["qk_rope_head_dim"] = spec.qk_rope_head_dim;
  config["qk_head_dim"] = spec.qk_nope_head_dim + spec.qk_rope_head_dim;
  // Equal to qk_rope_head_dim, as in GLM-5: some transformers builds alias head_dim onto the
  // rope dim and would silently change it otherwise (model-glm5.md §1.3).
  config["head_dim"] = spec.qk_rope_head_dim;
  config["v_head_dim"] = spec.v_head_dim;
  config["index_n_heads"] = spec.index_n_heads;
  config["index_head_dim"] = spec.index_head_dim;
  config["index_topk"] = spec.index_topk;
  config["indexer_rope_interleave"] = true;
  config["rope_interleave"] = true;
  config["n_routed_experts"] = spec.n_routed_experts;
  config["n_shared_experts"] = spec.n_shared_experts;
  config["num_experts_per_tok"] = spec.num_experts_per_tok;
  config["n_group"] = spec.n_group;
  config["topk_group"] = spec.topk_group;
  config["routed_scaling_factor"] = json_number(spec.routed_scaling_factor);
  config["norm_topk_prob"] = true;
  // vLLM defaults to softmax and only creates e_score_correction_bias for noaux_tc.
  config["scoring_func"] = "sigmoid";
  config["topk_method"] = "noaux_tc";
  config["rope_parameters"] = {{"rope_theta", json_number(spec.rope_theta)},
                               {"rope_type", "default"}};
  config["rope_theta"] = json_number(spec.rope_theta);
  config["max_position_embeddings"] = spec.max_position_embeddings;
  config["rms_norm_eps"] = spec.rms_norm_eps;
  config["hidden_act"] = "silu";
  config["attention_bias"] = false;
  config["attention_dropout"] = 0.0;
  config["tie_word_embeddings"] = false;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = tokens.eos;
  config["pad_token_id"] = tokens.pad ? nlohmann::ordered_json(*tokens.pad) : nullptr;
  config["initializer_range"] = 0.02;
  config["use_cache"] = true;
  config["ep_size"] = 1;
  config["pretraining_tp"] = 1;
  config["transformers_version"] = "5.0.2.dev0";
  return config;
}

nlohmann::ordered_json generation_config_json(const SyntheticModelSpec& spec) {
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::ordered_json config;
  config["_from_model_config"] = true;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = tokens.eos;
  if (tokens.pad) config["pad_token_id"] = *tokens.pad;
  config["transformers_version"] = "5.0.2.dev0";
  return config;
}

std::vector<TensorSpec> tensor_specs(const SyntheticModelSpec& spec) {
  std::vector<TensorSpec> specs;
  for (auto& tensor : synthetic_tensors(spec)) specs.push_back(std::move(tensor.spec));
  return specs;
}

std::uint64_t total_tensor_bytes(const SyntheticModelSpec& spec) {
  std::uint64_t total = 0;
  for (const auto& tensor : tensor_specs(spec)) total += tensor.byte_size();
  return total;
}

void generate_synthetic_tensor(const SyntheticModelSpec& spec, std::string_view tensor_name,
                               std::uint64_t first_element, std::span<std::byte> out) {
  for (const auto& tensor : synthetic_tensors(spec))
    if (tensor.spec.name == tensor_name)
      return generate_values(spec.seed, tensor, first_element, out);
  throw_bad_input("synth.unknown_tensor", "the synthetic model has no such tensor", {},
                  std::string(tensor_name));
}

SyntheticWriteSummary write_synthetic_checkpoint(const SyntheticModelSpec& spec,
                                                 const std::filesystem::path& output_directory,
                                                 const SyntheticProgressCallback& progress) {
  const std::vector<SyntheticTensor> tensors = synthetic_tensors(spec);
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

}  // namespace qs
