// The model families: how config.json names each, and the one reader of its keys.

#include "qs/ckpt/model/model_family.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

// ---- The families ----

constexpr std::string_view kGlmModelTypes[] = {"glm_moe_dsa"};
constexpr std::string_view kGlmArchitectures[] = {"GlmMoeDsaForCausalLM"};
// Kimi-K2 ships model_type kimi_k2 with DeepSeek-V3's architecture and tensors.
constexpr std::string_view kDeepseekModelTypes[] = {"deepseek_v3", "kimi_k2"};
constexpr std::string_view kDeepseekArchitectures[] = {"DeepseekV3ForCausalLM"};
constexpr std::string_view kQwenModelTypes[] = {"qwen3_moe"};
constexpr std::string_view kQwenArchitectures[] = {"Qwen3MoeForCausalLM"};

constexpr FusionKind kGlmFusions[] = {FusionKind::QkvA, FusionKind::GateUp,
                                      FusionKind::ExpertGateUp, FusionKind::IndexerWkWeightsProj};
constexpr FusionKind kDeepseekFusions[] = {FusionKind::QkvA, FusionKind::GateUp,
                                           FusionKind::ExpertGateUp};
constexpr FusionKind kQwenFusions[] = {FusionKind::Qkv, FusionKind::GateUp,
                                       FusionKind::ExpertGateUp};

// clang-format off
constexpr ModelFamily kFamilies[] = {
    {.id = ModelFamilyId::GlmMoeDsa, .name = "glm_moe_dsa", .model_types = kGlmModelTypes,
     .architectures = kGlmArchitectures, .attention = AttentionKind::Mla,
     .moe_layers = MoeLayerRule::FirstKDenseThenFreq, .has_indexer = true,
     .has_shared_experts = true, .has_mtp = true, .mtp_stores_embed_and_head = false,
     .fusions = kGlmFusions},
    {.id = ModelFamilyId::DeepseekV3, .name = "deepseek_v3", .model_types = kDeepseekModelTypes,
     .architectures = kDeepseekArchitectures, .attention = AttentionKind::Mla,
     .moe_layers = MoeLayerRule::FirstKDenseThenFreq, .has_indexer = false,
     .has_shared_experts = true, .has_mtp = true, .mtp_stores_embed_and_head = true,
     .fusions = kDeepseekFusions},
    {.id = ModelFamilyId::Qwen3Moe, .name = "qwen3_moe", .model_types = kQwenModelTypes,
     .architectures = kQwenArchitectures, .attention = AttentionKind::Gqa,
     .moe_layers = MoeLayerRule::SparseStep, .has_indexer = false,
     .has_shared_experts = false, .has_mtp = false, .mtp_stores_embed_and_head = false,
     .fusions = kQwenFusions},
};
// clang-format on

constexpr bool families_in_enum_order() {
  for (std::size_t i = 0; i < std::size(kFamilies); ++i)
    if (static_cast<std::size_t>(kFamilies[i].id) != i) return false;
  return true;
}
static_assert(families_in_enum_order());

bool contains(std::span<const std::string_view> names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// ---- Reading keys ----

// A JSON integer >= 0: parsed files give unsigned numbers, configs built in code signed ones.
bool is_count(const nlohmann::json& value) {
  return value.is_number_unsigned() ||
         (value.is_number_integer() && value.get<std::int64_t>() >= 0);
}

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& config, std::string file)
      : config_(config), file_(std::move(file)) {}

  // An unsigned key; absent (or null) keys use `fallback` when given, else are an error.
  std::uint64_t count(const char* key, std::optional<std::uint64_t> fallback) const {
    const auto* value = find(key);
    if (!value) {
      if (fallback) return *fallback;
      throw_bad_input("config.missing_key", fmt::format("config.json has no \"{}\"", key), file_);
    }
    if (!is_count(*value)) invalid(key, *value, "a non-negative integer");
    return value->get<std::uint64_t>();
  }
  std::uint64_t required(const char* key) const { return count(key, std::nullopt); }

  double real(const char* key, double fallback) const {
    const auto* value = find(key);
    if (!value) return fallback;
    if (!value->is_number()) invalid(key, *value, "a number");
    return value->get<double>();
  }

  bool flag(const char* key, bool fallback) const {
    const auto* value = find(key);
    if (!value) return fallback;
    if (!value->is_boolean()) invalid(key, *value, "true or false");
    return value->get<bool>();
  }

  // A string key whose value must be one of `table`'s names.
  template <typename Enum, std::size_t N>
  Enum choice(const char* key, const std::pair<std::string_view, Enum> (&table)[N],
              Enum fallback) const {
    const auto* value = find(key);
    if (!value) return fallback;
    if (value->is_string())
      for (const auto& [name, result] : table)
        if (value->get<std::string>() == name) return result;
    std::string names;
    for (const auto& [name, result] : table)
      names += fmt::format("{}\"{}\"", names.empty() ? "" : ", ", name);
    invalid(key, *value, fmt::format("one of {}", names));
  }

  std::vector<std::uint64_t> counts(const char* key) const {
    const auto* value = find(key);
    if (!value) return {};
    if (!value->is_array()) invalid(key, *value, "a list of layer indices");
    std::vector<std::uint64_t> result;
    for (const auto& entry : *value) {
      if (!is_count(entry)) invalid(key, *value, "a list of layer indices");
      result.push_back(entry.get<std::uint64_t>());
    }
    return result;
  }

  std::optional<RopeScaling> rope_scaling() const {
    const auto* value = find("rope_scaling");
    if (!value) return std::nullopt;
    if (!value->is_object()) invalid("rope_scaling", *value, "an object or null");
    const ConfigReader inner(*value, file_);
    RopeScaling scaling;
    const auto* type = inner.find("type") ? inner.find("type") : inner.find("rope_type");
    if (!type || !type->is_string())
      invalid("rope_scaling", *value, "an object with a \"type\" string");
    scaling.type = type->get<std::string>();
    scaling.factor = inner.real("factor", 1.0);
    scaling.original_max_position_embeddings = inner.count("original_max_position_embeddings", 0);
    scaling.beta_fast = inner.real("beta_fast", 32.0);
    scaling.beta_slow = inner.real("beta_slow", 1.0);
    scaling.mscale = inner.real("mscale", 1.0);
    scaling.mscale_all_dim = inner.real("mscale_all_dim", 0.0);
    if (!(scaling.factor > 0.0)) invalid("rope_scaling", *value, "a positive \"factor\"");
    return scaling;
  }

 private:
  const nlohmann::json* find(const char* key) const {
    const auto it = config_.find(key);
    return it == config_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void invalid(const char* key, const nlohmann::json& value,
                            std::string_view expected) const {
    throw_bad_input("config.invalid_value",
                    fmt::format("\"{}\" is {}, expected {}", key, value.dump(), expected), file_);
  }

  const nlohmann::json& config_;
  std::string file_;
};

constexpr std::pair<std::string_view, RouterScoring> kScoringFunctions[] = {
    {"sigmoid", RouterScoring::Sigmoid},
    {"softmax", RouterScoring::Softmax},
};
constexpr std::pair<std::string_view, TopkMethod> kTopkMethods[] = {
    {"noaux_tc", TopkMethod::NoauxTc},
    {"greedy", TopkMethod::Greedy},
};

// What every family reads alike.
// Which layers exist and which are MoE, by the family's rule: the keys model_layout_from_config
// reads alone.
void read_layers(const ConfigReader& read, MoeLayerRule rule, ModelDimensions& d) {
  d.num_hidden_layers = read.required("num_hidden_layers");
  switch (rule) {
    case MoeLayerRule::FirstKDenseThenFreq:
      d.first_k_dense_replace = read.count("first_k_dense_replace", 0);
      d.moe_layer_freq = read.count("moe_layer_freq", 1);
      d.num_nextn_predict_layers = read.count("num_nextn_predict_layers", 0);
      break;
    case MoeLayerRule::SparseStep:
      d.decoder_sparse_step = read.count("decoder_sparse_step", 1);
      d.mlp_only_layers = read.counts("mlp_only_layers");
      break;
  }
}

void read_common(const ConfigReader& read, ModelDimensions& d) {
  d.vocab_size = read.required("vocab_size");
  d.hidden_size = read.required("hidden_size");
  read_layers(read, model_family(d.family).moe_layers, d);
  d.num_attention_heads = read.required("num_attention_heads");
  d.num_experts_per_tok = read.required("num_experts_per_tok");
  d.moe_intermediate_size = read.required("moe_intermediate_size");
  d.max_position_embeddings = read.count("max_position_embeddings", 1);
  d.rope_theta = read.real("rope_theta", d.rope_theta);
  d.rms_norm_eps = read.real("rms_norm_eps", d.rms_norm_eps);
  d.tie_word_embeddings = read.flag("tie_word_embeddings", false);
  d.rope_scaling = read.rope_scaling();
}

// MLA families (glm_moe_dsa, deepseek_v3): DeepSeek-V2's key names.
void read_mla(const ConfigReader& read, ModelDimensions& d) {
  d.intermediate_size = d.first_k_dense_replace > 0 ? read.required("intermediate_size")
                                                    : read.count("intermediate_size", 0);
  d.num_key_value_heads = read.count("num_key_value_heads", d.num_attention_heads);
  d.q_lora_rank = read.required("q_lora_rank");
  d.kv_lora_rank = read.required("kv_lora_rank");
  d.qk_nope_head_dim = read.required("qk_nope_head_dim");
  d.qk_rope_head_dim = read.required("qk_rope_head_dim");
  d.v_head_dim = read.required("v_head_dim");
  d.n_routed_experts = read.required("n_routed_experts");
  d.n_shared_experts = read.count("n_shared_experts", 0);
  d.n_group = read.count("n_group", 1);
  d.topk_group = read.count("topk_group", 1);
  d.routed_scaling_factor = read.real("routed_scaling_factor", d.routed_scaling_factor);
  d.norm_topk_prob = read.flag("norm_topk_prob", true);
  d.rope_interleave = read.flag("rope_interleave", true);
}

ModelDimensions read_glm_moe_dsa(const ConfigReader& read) {
  ModelDimensions d = default_dimensions(ModelFamilyId::GlmMoeDsa);
  read_common(read, d);
  read_mla(read, d);
  d.index_n_heads = read.required("index_n_heads");
  d.index_head_dim = read.required("index_head_dim");
  d.index_topk = read.required("index_topk");
  // GLM-5 routes as DeepSeek-V3 does; its configs spell the same keys.
  d.scoring_func = read.choice("scoring_func", kScoringFunctions, RouterScoring::Sigmoid);
  d.topk_method = read.choice("topk_method", kTopkMethods, TopkMethod::NoauxTc);
  return d;
}

ModelDimensions read_deepseek_v3(const ConfigReader& read) {
  ModelDimensions d = default_dimensions(ModelFamilyId::DeepseekV3);
  read_common(read, d);
  read_mla(read, d);
  d.scoring_func = read.choice("scoring_func", kScoringFunctions, RouterScoring::Sigmoid);
  d.topk_method = read.choice("topk_method", kTopkMethods, TopkMethod::NoauxTc);
  return d;
}

ModelDimensions read_qwen3_moe(const ConfigReader& read) {
  ModelDimensions d = default_dimensions(ModelFamilyId::Qwen3Moe);
  read_common(read, d);
  d.intermediate_size = read.count("intermediate_size", 0);
  d.num_key_value_heads = read.count("num_key_value_heads", d.num_attention_heads);
  d.head_dim =
      read.count("head_dim", d.num_attention_heads ? d.hidden_size / d.num_attention_heads : 0);
  d.n_routed_experts = read.required("num_experts");
  d.norm_topk_prob = read.flag("norm_topk_prob", false);
  return d;
}

using DimensionsReader = ModelDimensions (*)(const ConfigReader&);
constexpr DimensionsReader kReaders[] = {read_glm_moe_dsa, read_deepseek_v3, read_qwen3_moe};
static_assert(std::size(kReaders) == std::size(kFamilies));

}  // namespace

ModelDimensions default_dimensions(ModelFamilyId id) {
  ModelDimensions d;
  d.family = id;
  d.has_indexer = model_family(id).has_indexer;
  switch (id) {
    case ModelFamilyId::GlmMoeDsa:
      break;  // the struct's defaults are GLM-5's
    case ModelFamilyId::DeepseekV3:
      // transformers' DeepseekV3Config defaults.
      d.rope_theta = 10'000.0;
      d.rms_norm_eps = 1e-6;
      break;
    case ModelFamilyId::Qwen3Moe:
      // Qwen3MoeConfig: softmax over all experts, top-k without groups or bias, RoPE on halves.
      d.scoring_func = RouterScoring::Softmax;
      d.topk_method = TopkMethod::Greedy;
      d.routed_scaling_factor = 1.0;
      d.rope_interleave = false;
      d.rope_theta = 10'000.0;
      d.rms_norm_eps = 1e-6;
      break;
  }
  return d;
}

bool ModelDimensions::is_moe_layer(std::uint64_t layer) const {
  if (n_routed_experts == 0) return false;
  return layout_of(*this).is_moe_layer(static_cast<std::uint32_t>(layer));
}

std::span<const ModelFamily> model_families() { return kFamilies; }

const ModelFamily& model_family(ModelFamilyId id) {
  return kFamilies[static_cast<std::size_t>(id)];
}

const ModelFamily* model_family_named(std::string_view name) {
  for (const auto& family : kFamilies)
    if (family.name == name) return &family;
  return nullptr;
}

const ModelFamily* find_model_family(const nlohmann::json& config) {
  if (!config.is_object()) return nullptr;
  if (const auto type = config.find("model_type"); type != config.end() && type->is_string())
    for (const auto& family : kFamilies)
      if (contains(family.model_types, type->get<std::string>())) return &family;
  if (const auto names = config.find("architectures"); names != config.end() && names->is_array())
    for (const auto& name : *names)
      if (name.is_string())
        for (const auto& family : kFamilies)
          if (contains(family.architectures, name.get<std::string>())) return &family;
  return nullptr;
}

const ModelFamily& model_family_of(const nlohmann::json& config, const std::string& file) {
  if (const auto* family = find_model_family(config)) return *family;
  if (!config.is_object())
    throw_bad_input("config.missing", "no config.json object to read the model family from", file);
  std::string known;
  for (const auto& family : kFamilies)
    known += fmt::format("{}{}", known.empty() ? "" : ", ", family.name);
  throw_bad_input("config.unknown_family",
                  fmt::format("model_type {} / architectures {} is not a model family we know "
                              "(known: {})",
                              config.value("model_type", nlohmann::json()).dump(),
                              config.value("architectures", nlohmann::json()).dump(), known),
                  file);
}

ModelDimensions dimensions_from_config(const nlohmann::json& config, const std::string& file) {
  if (!config.is_object())
    throw_bad_input("config.missing", "no config.json object to read dimensions from", file);
  const ModelFamily& family = model_family_of(config, file);
  ModelDimensions dimensions =
      kReaders[static_cast<std::size_t>(family.id)](ConfigReader(config, file));
  validate_dimensions(dimensions, file);
  return dimensions;
}

bool ModelLayout::is_moe_layer(std::uint32_t layer) const {
  switch (moe_rule) {
    case MoeLayerRule::FirstKDenseThenFreq: {
      // A hand-built layout may leave the frequency at zero; read it as "every layer".
      const std::uint32_t frequency = moe_layer_freq == 0 ? 1 : moe_layer_freq;
      return layer >= first_k_dense_replace && layer % frequency == 0;
    }
    case MoeLayerRule::SparseStep: {
      const std::uint32_t step = decoder_sparse_step == 0 ? 1 : decoder_sparse_step;
      return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) ==
                 mlp_only_layers.end() &&
             (layer + 1) % step == 0;
    }
  }
  return false;
}

std::optional<ModelLayout> model_layout_from_config(const nlohmann::json& config) {
  if (!config.is_object()) return std::nullopt;
  const ModelFamily* family = find_model_family(config);
  // Unknown families: the DeepSeek keys, which every MLA model spells alike.
  ModelDimensions d = default_dimensions(family ? family->id : ModelFamilyId::DeepseekV3);
  try {
    read_layers(ConfigReader(config, "config.json"), model_family(d.family).moe_layers, d);
  } catch (const Error&) {
    return std::nullopt;
  }
  // vLLM takes the layer index modulo these; zero is a broken config, not a layout. Indices
  // past uint32 are not layers either (config_numbers bounds real ones far lower).
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint32_t>::max();
  if (d.moe_layer_freq == 0 || d.decoder_sparse_step == 0 || d.num_hidden_layers > kMax ||
      d.first_k_dense_replace > kMax || d.moe_layer_freq > kMax ||
      d.num_nextn_predict_layers > kMax || d.decoder_sparse_step > kMax ||
      std::any_of(d.mlp_only_layers.begin(), d.mlp_only_layers.end(),
                  [](std::uint64_t layer) { return layer > kMax; }))
    return std::nullopt;
  return layout_of(d);
}

bool in_mtp_layer(const ParsedTensorName& parsed, const ModelLayout& layout) {
  return parsed.layer.has_value() && layout.is_mtp_layer(*parsed.layer);
}

ModelLayout layout_of(const ModelDimensions& d) {
  auto narrow = [](std::uint64_t value) {
    return static_cast<std::uint32_t>(
        std::min<std::uint64_t>(value, std::numeric_limits<std::uint32_t>::max()));
  };
  ModelLayout layout{.num_hidden_layers = narrow(d.num_hidden_layers),
                     .first_k_dense_replace = narrow(d.first_k_dense_replace),
                     .moe_layer_freq = narrow(d.moe_layer_freq),
                     .num_nextn_predict_layers = narrow(d.num_nextn_predict_layers),
                     .moe_rule = model_family(d.family).moe_layers,
                     .decoder_sparse_step = narrow(d.decoder_sparse_step)};
  for (auto layer : d.mlp_only_layers) layout.mlp_only_layers.push_back(narrow(layer));
  return layout;
}

}  // namespace qs
