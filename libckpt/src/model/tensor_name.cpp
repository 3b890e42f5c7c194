#include "qs/ckpt/model/tensor_name.h"

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <utility>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

// ---- Roles ----

struct RoleInfo {
  TensorRole role;
  const char* name;
  TensorCategory category;
  bool linear;
};

// clang-format off
constexpr std::array kRoles{
    RoleInfo{TensorRole::Embed, "embed", TensorCategory::Embedding, false},
    RoleInfo{TensorRole::LmHead, "lm_head", TensorCategory::LmHead, true},
    RoleInfo{TensorRole::FinalNorm, "norm.final", TensorCategory::Norm, false},
    RoleInfo{TensorRole::InputNorm, "norm.input", TensorCategory::Norm, false},
    RoleInfo{TensorRole::PostAttnNorm, "norm.post_attn", TensorCategory::Norm, false},
    RoleInfo{TensorRole::Attention, "attn", TensorCategory::Attention, false},
    RoleInfo{TensorRole::AttnQA, "attn.q_a", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnQANorm, "attn.q_a_norm", TensorCategory::Norm, false},
    RoleInfo{TensorRole::AttnQB, "attn.q_b", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnKvA, "attn.kv_a", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnKvANorm, "attn.kv_a_norm", TensorCategory::Norm, false},
    RoleInfo{TensorRole::AttnKvB, "attn.kv_b", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnO, "attn.o", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnRotaryEmb, "attn.rotary_emb", TensorCategory::Attention, false},
    RoleInfo{TensorRole::AttnQ, "attn.q", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnK, "attn.k", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnV, "attn.v", TensorCategory::Attention, true},
    RoleInfo{TensorRole::AttnQNorm, "attn.q_norm", TensorCategory::Norm, false},
    RoleInfo{TensorRole::AttnKNorm, "attn.k_norm", TensorCategory::Norm, false},
    RoleInfo{TensorRole::IndexerWqB, "indexer.wq_b", TensorCategory::Indexer, true},
    RoleInfo{TensorRole::IndexerWk, "indexer.wk", TensorCategory::Indexer, true},
    RoleInfo{TensorRole::IndexerKNorm, "indexer.k_norm", TensorCategory::Norm, false},
    RoleInfo{TensorRole::IndexerWeightsProj, "indexer.weights_proj", TensorCategory::Indexer,
             true},
    RoleInfo{TensorRole::RouterGate, "router.gate", TensorCategory::Router, true},
    RoleInfo{TensorRole::RouterBias, "router.bias", TensorCategory::Router, false},
    RoleInfo{TensorRole::DenseGate, "dense.gate", TensorCategory::DenseMlp, true},
    RoleInfo{TensorRole::DenseUp, "dense.up", TensorCategory::DenseMlp, true},
    RoleInfo{TensorRole::DenseDown, "dense.down", TensorCategory::DenseMlp, true},
    RoleInfo{TensorRole::SharedGate, "shared.gate", TensorCategory::SharedExpert, true},
    RoleInfo{TensorRole::SharedUp, "shared.up", TensorCategory::SharedExpert, true},
    RoleInfo{TensorRole::SharedDown, "shared.down", TensorCategory::SharedExpert, true},
    RoleInfo{TensorRole::ExpertGate, "expert.gate", TensorCategory::RoutedExpert, true},
    RoleInfo{TensorRole::ExpertUp, "expert.up", TensorCategory::RoutedExpert, true},
    RoleInfo{TensorRole::ExpertDown, "expert.down", TensorCategory::RoutedExpert, true},
    RoleInfo{TensorRole::MtpEhProj, "mtp.eh_proj", TensorCategory::MtpExtra, true},
    RoleInfo{TensorRole::MtpEnorm, "mtp.enorm", TensorCategory::MtpExtra, false},
    RoleInfo{TensorRole::MtpHnorm, "mtp.hnorm", TensorCategory::MtpExtra, false},
    RoleInfo{TensorRole::MtpSharedHeadNorm, "mtp.shared_head.norm", TensorCategory::MtpExtra,
             false},
    RoleInfo{TensorRole::MtpSharedHeadLmHead, "mtp.shared_head.head", TensorCategory::MtpExtra,
             true},
    RoleInfo{TensorRole::MtpEmbed, "mtp.embed", TensorCategory::MtpExtra, false},
    RoleInfo{TensorRole::Unknown, "unknown", TensorCategory::Unknown, false},
};
// clang-format on

// The table is indexed by the enum; keep the two in the same order.
constexpr bool roles_in_enum_order() {
  for (std::size_t i = 0; i < kRoles.size(); ++i) {
    if (static_cast<std::size_t>(kRoles[i].role) != i) return false;
  }
  return kRoles.size() == static_cast<std::size_t>(TensorRole::Unknown) + 1;
}
static_assert(roles_in_enum_order());

const RoleInfo& info(TensorRole role) { return kRoles[static_cast<std::size_t>(role)]; }

constexpr std::array kCategoryNames{
    std::pair{TensorCategory::Attention, "attention"},
    std::pair{TensorCategory::Indexer, "indexer"},
    std::pair{TensorCategory::Router, "router"},
    std::pair{TensorCategory::DenseMlp, "dense_mlp"},
    std::pair{TensorCategory::SharedExpert, "shared_expert"},
    std::pair{TensorCategory::RoutedExpert, "routed_expert"},
    std::pair{TensorCategory::Norm, "norm"},
    std::pair{TensorCategory::Embedding, "embedding"},
    std::pair{TensorCategory::LmHead, "lm_head"},
    std::pair{TensorCategory::MtpExtra, "mtp_extra"},
    std::pair{TensorCategory::Unknown, "unknown"},
};

constexpr bool categories_in_enum_order() {
  for (std::size_t i = 0; i < kCategoryNames.size(); ++i) {
    if (static_cast<std::size_t>(kCategoryNames[i].first) != i) return false;
  }
  return kCategoryNames.size() == static_cast<std::size_t>(TensorCategory::Unknown) + 1;
}
static_assert(categories_in_enum_order());

// ---- Parameters (the last name component) ----

struct ParameterInfo {
  TensorParameter parameter;
  const char* name;
  bool companion;
};

constexpr std::array kParameters{
    ParameterInfo{TensorParameter::Weight, "weight", false},
    ParameterInfo{TensorParameter::Bias, "bias", false},
    ParameterInfo{TensorParameter::EScoreCorrectionBias, "e_score_correction_bias", false},
    ParameterInfo{TensorParameter::InvFreq, "inv_freq", false},
    ParameterInfo{TensorParameter::WeightPacked, "weight_packed", true},
    ParameterInfo{TensorParameter::WeightScale, "weight_scale", true},
    ParameterInfo{TensorParameter::WeightScaleInv, "weight_scale_inv", true},
    ParameterInfo{TensorParameter::WeightScale2, "weight_scale_2", true},
    ParameterInfo{TensorParameter::WeightGlobalScale, "weight_global_scale", true},
    ParameterInfo{TensorParameter::WeightZeroPoint, "weight_zero_point", true},
    ParameterInfo{TensorParameter::WeightShape, "weight_shape", true},
    ParameterInfo{TensorParameter::WeightGIdx, "weight_g_idx", true},
    ParameterInfo{TensorParameter::InputScale, "input_scale", true},
    ParameterInfo{TensorParameter::InputGlobalScale, "input_global_scale", true},
    ParameterInfo{TensorParameter::InputZeroPoint, "input_zero_point", true},
    ParameterInfo{TensorParameter::OutputScale, "output_scale", true},
    ParameterInfo{TensorParameter::KScale, "k_scale", true},
    ParameterInfo{TensorParameter::VScale, "v_scale", true},
    ParameterInfo{TensorParameter::QScale, "q_scale", true},
    ParameterInfo{TensorParameter::KZeroPoint, "k_zero_point", true},
    ParameterInfo{TensorParameter::VZeroPoint, "v_zero_point", true},
    ParameterInfo{TensorParameter::QZeroPoint, "q_zero_point", true},
    ParameterInfo{TensorParameter::GptqQweight, "qweight", true},
    ParameterInfo{TensorParameter::GptqQzeros, "qzeros", true},
    ParameterInfo{TensorParameter::GptqScales, "scales", true},
    ParameterInfo{TensorParameter::GptqGIdx, "g_idx", true},
    ParameterInfo{TensorParameter::VqCodes, "vq_codes", true},
    ParameterInfo{TensorParameter::VqScales, "vq_scales", true},
    ParameterInfo{TensorParameter::Unknown, "unknown", false},
};

constexpr bool parameters_in_enum_order() {
  for (std::size_t i = 0; i < kParameters.size(); ++i) {
    if (static_cast<std::size_t>(kParameters[i].parameter) != i) return false;
  }
  return kParameters.size() == static_cast<std::size_t>(TensorParameter::Unknown) + 1;
}
static_assert(parameters_in_enum_order());

TensorParameter lookup_parameter(std::string_view text) {
  for (const ParameterInfo& entry : kParameters) {
    if (entry.parameter != TensorParameter::Unknown && text == entry.name) return entry.parameter;
  }
  return TensorParameter::Unknown;
}

// ---- The module grammar ----

// A module path pattern: dot-separated components, where "{layer}" and "{expert}" match a
// canonical decimal index and capture it. `only_parameter` restricts a rule to one parameter;
// such rules come before the general rule for the same module.
struct ModuleRule {
  std::string_view pattern;
  TensorRole role;
  std::optional<TensorParameter> only_parameter;
};

// clang-format off
constexpr std::array kModuleRules{
    ModuleRule{"model.embed_tokens", TensorRole::Embed, {}},
    ModuleRule{"model.norm", TensorRole::FinalNorm, {}},
    ModuleRule{"lm_head", TensorRole::LmHead, {}},

    ModuleRule{"model.layers.{layer}.input_layernorm", TensorRole::InputNorm, {}},
    ModuleRule{"model.layers.{layer}.post_attention_layernorm", TensorRole::PostAttnNorm, {}},

    ModuleRule{"model.layers.{layer}.self_attn", TensorRole::Attention, {}},
    ModuleRule{"model.layers.{layer}.self_attn.q_a_proj", TensorRole::AttnQA, {}},
    ModuleRule{"model.layers.{layer}.self_attn.q_a_layernorm", TensorRole::AttnQANorm, {}},
    ModuleRule{"model.layers.{layer}.self_attn.q_b_proj", TensorRole::AttnQB, {}},
    ModuleRule{"model.layers.{layer}.self_attn.kv_a_proj_with_mqa", TensorRole::AttnKvA, {}},
    ModuleRule{"model.layers.{layer}.self_attn.kv_a_layernorm", TensorRole::AttnKvANorm, {}},
    ModuleRule{"model.layers.{layer}.self_attn.kv_b_proj", TensorRole::AttnKvB, {}},
    ModuleRule{"model.layers.{layer}.self_attn.o_proj", TensorRole::AttnO, {}},
    ModuleRule{"model.layers.{layer}.self_attn.rotary_emb", TensorRole::AttnRotaryEmb, {}},
    ModuleRule{"model.layers.{layer}.self_attn.q_proj", TensorRole::AttnQ, {}},
    ModuleRule{"model.layers.{layer}.self_attn.k_proj", TensorRole::AttnK, {}},
    ModuleRule{"model.layers.{layer}.self_attn.v_proj", TensorRole::AttnV, {}},
    ModuleRule{"model.layers.{layer}.self_attn.q_norm", TensorRole::AttnQNorm, {}},
    ModuleRule{"model.layers.{layer}.self_attn.k_norm", TensorRole::AttnKNorm, {}},

    ModuleRule{"model.layers.{layer}.self_attn.indexer.wq_b", TensorRole::IndexerWqB, {}},
    ModuleRule{"model.layers.{layer}.self_attn.indexer.wk", TensorRole::IndexerWk, {}},
    ModuleRule{"model.layers.{layer}.self_attn.indexer.k_norm", TensorRole::IndexerKNorm, {}},
    ModuleRule{"model.layers.{layer}.self_attn.indexer.weights_proj",
               TensorRole::IndexerWeightsProj, {}},

    ModuleRule{"model.layers.{layer}.mlp.gate", TensorRole::RouterBias,
               TensorParameter::EScoreCorrectionBias},
    ModuleRule{"model.layers.{layer}.mlp.gate", TensorRole::RouterGate, {}},

    ModuleRule{"model.layers.{layer}.mlp.gate_proj", TensorRole::DenseGate, {}},
    ModuleRule{"model.layers.{layer}.mlp.up_proj", TensorRole::DenseUp, {}},
    ModuleRule{"model.layers.{layer}.mlp.down_proj", TensorRole::DenseDown, {}},

    ModuleRule{"model.layers.{layer}.mlp.shared_experts.gate_proj", TensorRole::SharedGate, {}},
    ModuleRule{"model.layers.{layer}.mlp.shared_experts.up_proj", TensorRole::SharedUp, {}},
    ModuleRule{"model.layers.{layer}.mlp.shared_experts.down_proj", TensorRole::SharedDown, {}},

    ModuleRule{"model.layers.{layer}.mlp.experts.{expert}.gate_proj", TensorRole::ExpertGate, {}},
    ModuleRule{"model.layers.{layer}.mlp.experts.{expert}.up_proj", TensorRole::ExpertUp, {}},
    ModuleRule{"model.layers.{layer}.mlp.experts.{expert}.down_proj", TensorRole::ExpertDown, {}},

    ModuleRule{"model.layers.{layer}.eh_proj", TensorRole::MtpEhProj, {}},
    ModuleRule{"model.layers.{layer}.enorm", TensorRole::MtpEnorm, {}},
    ModuleRule{"model.layers.{layer}.hnorm", TensorRole::MtpHnorm, {}},
    ModuleRule{"model.layers.{layer}.shared_head.norm", TensorRole::MtpSharedHeadNorm, {}},
    ModuleRule{"model.layers.{layer}.shared_head.head", TensorRole::MtpSharedHeadLmHead, {}},
    ModuleRule{"model.layers.{layer}.embed_tokens", TensorRole::MtpEmbed, {}},
};
// clang-format on

// Splits off the text up to the next '.', advancing `rest` past the dot. Returns the whole of
// `rest` (and leaves it empty) when there is no dot.
std::string_view next_component(std::string_view& rest) {
  const std::size_t dot = rest.find('.');
  std::string_view component = rest.substr(0, dot);
  rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
  return component;
}

// PyTorch writes module indices as plain decimals; "03", "+3" or "3e0" are not indices. The
// bound keeps the value in uint32 with room to spare.
std::optional<std::uint32_t> canonical_index(std::string_view text) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  if (text.size() > 1 && text.front() == '0') return std::nullopt;
  std::uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  return value;
}

struct Indices {
  std::optional<std::uint32_t> layer;
  std::optional<std::uint32_t> expert;
};

bool matches_rule(std::string_view pattern, std::string_view module_path, Indices& indices) {
  Indices captured;
  std::string_view pattern_rest = pattern;
  std::string_view path_rest = module_path;
  while (!pattern_rest.empty()) {
    if (path_rest.empty()) return false;
    const std::string_view want = next_component(pattern_rest);
    const std::string_view have = next_component(path_rest);
    if (want == "{layer}" || want == "{expert}") {
      const std::optional<std::uint32_t> index = canonical_index(have);
      if (!index) return false;
      (want == "{layer}" ? captured.layer : captured.expert) = index;
    } else if (want != have) {
      return false;
    }
  }
  if (!path_rest.empty()) return false;
  indices = captured;
  return true;
}

// For names outside the grammar we still report where they sit, so `inspect` can attribute
// unknown tensors to a layer.
Indices indices_outside_grammar(std::string_view module_path) {
  Indices indices;
  std::string_view rest = module_path;
  std::string_view previous2;
  std::string_view previous;
  while (!rest.empty()) {
    const std::string_view component = next_component(rest);
    if (previous2 == "model" && previous == "layers" && !indices.layer) {
      indices.layer = canonical_index(component);
    }
    if (previous == "experts" && !indices.expert) indices.expert = canonical_index(component);
    previous2 = previous;
    previous = component;
  }
  return indices;
}

// ---- Fusion ----

struct FusionRule {
  TensorRole role;
  FusionKind kind;
  std::string_view fused_component;
  std::span<const std::string_view> member_components;  // in the engine's row order
  std::size_t member_index;
};

constexpr std::string_view kQkvAMembers[] = {"q_a_proj", "kv_a_proj_with_mqa"};
constexpr std::string_view kQkvMembers[] = {"q_proj", "k_proj", "v_proj"};
constexpr std::string_view kGateUpMembers[] = {"gate_proj", "up_proj"};
constexpr std::string_view kIndexerMembers[] = {"wk", "weights_proj"};

// clang-format off
constexpr std::array kFusionRules{
    FusionRule{TensorRole::AttnQA, FusionKind::QkvA, "fused_qkv_a_proj", kQkvAMembers, 0},
    FusionRule{TensorRole::AttnKvA, FusionKind::QkvA, "fused_qkv_a_proj", kQkvAMembers, 1},
    FusionRule{TensorRole::AttnQ, FusionKind::Qkv, "qkv_proj", kQkvMembers, 0},
    FusionRule{TensorRole::AttnK, FusionKind::Qkv, "qkv_proj", kQkvMembers, 1},
    FusionRule{TensorRole::AttnV, FusionKind::Qkv, "qkv_proj", kQkvMembers, 2},
    FusionRule{TensorRole::DenseGate, FusionKind::GateUp, "gate_up_proj", kGateUpMembers, 0},
    FusionRule{TensorRole::DenseUp, FusionKind::GateUp, "gate_up_proj", kGateUpMembers, 1},
    FusionRule{TensorRole::SharedGate, FusionKind::GateUp, "gate_up_proj", kGateUpMembers, 0},
    FusionRule{TensorRole::SharedUp, FusionKind::GateUp, "gate_up_proj", kGateUpMembers, 1},
    FusionRule{TensorRole::ExpertGate, FusionKind::ExpertGateUp, "gate_up_proj", kGateUpMembers, 0},
    FusionRule{TensorRole::ExpertUp, FusionKind::ExpertGateUp, "gate_up_proj", kGateUpMembers, 1},
    FusionRule{TensorRole::IndexerWk, FusionKind::IndexerWkWeightsProj, "wk_weights_proj",
               kIndexerMembers, 0},
    FusionRule{TensorRole::IndexerWeightsProj, FusionKind::IndexerWkWeightsProj,
               "wk_weights_proj", kIndexerMembers, 1},
};
// clang-format on

}  // namespace

ParsedTensorName parse_tensor_name(std::string_view name) {
  ParsedTensorName parsed;
  parsed.name = std::string(name);
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos) {
    parsed.module_path = parsed.name;
    return parsed;
  }
  const std::string_view module_path = name.substr(0, dot);
  parsed.module_path = std::string(module_path);
  parsed.parameter_name = std::string(name.substr(dot + 1));
  parsed.parameter = lookup_parameter(parsed.parameter_name);

  if (parsed.parameter != TensorParameter::Unknown) {
    for (const ModuleRule& rule : kModuleRules) {
      if (rule.only_parameter && *rule.only_parameter != parsed.parameter) continue;
      Indices indices;
      if (matches_rule(rule.pattern, module_path, indices)) {
        parsed.role = rule.role;
        parsed.layer = indices.layer;
        parsed.expert = indices.expert;
        return parsed;
      }
    }
  }
  const Indices indices = indices_outside_grammar(module_path);
  parsed.layer = indices.layer;
  parsed.expert = indices.expert;
  return parsed;
}

const char* role_name(TensorRole role) { return info(role).name; }

const char* category_name(TensorCategory category) {
  return kCategoryNames[static_cast<std::size_t>(category)].second;
}

const char* parameter_name(TensorParameter parameter) {
  return kParameters[static_cast<std::size_t>(parameter)].name;
}

TensorCategory category(TensorRole role) { return info(role).category; }

std::optional<TensorRole> parse_role_name(std::string_view text) {
  for (const RoleInfo& role : kRoles)
    if (role.role != TensorRole::Unknown && text == role.name) return role.role;
  return std::nullopt;
}

std::optional<TensorCategory> parse_category_name(std::string_view text) {
  for (const auto& [category, name] : kCategoryNames)
    if (category != TensorCategory::Unknown && text == name) return category;
  return std::nullopt;
}

bool is_linear(TensorRole role) { return info(role).linear; }

bool is_quantization_companion(TensorParameter parameter) {
  return kParameters[static_cast<std::size_t>(parameter)].companion;
}

std::optional<FusedGroup> fused_group(const ParsedTensorName& parsed) {
  for (const FusionRule& rule : kFusionRules) {
    if (rule.role != parsed.role) continue;
    // Members are siblings of the parsed module: replace its last component.
    const std::size_t dot = parsed.module_path.rfind('.');
    const std::string parent = parsed.module_path.substr(0, dot + 1);
    FusedGroup group{rule.kind, parent + std::string(rule.fused_component), {}, rule.member_index};
    for (std::string_view member : rule.member_components) {
      group.members.push_back(parent + std::string(member));
    }
    return group;
  }
  return std::nullopt;
}

std::string role_module_path(TensorRole role, std::uint32_t layer, std::uint32_t expert) {
  for (const ModuleRule& rule : kModuleRules) {
    if (rule.role != role) continue;
    std::string path;
    std::string_view rest = rule.pattern;
    while (!rest.empty()) {
      const std::string_view component = next_component(rest);
      if (!path.empty()) path += '.';
      if (component == "{layer}")
        path += std::to_string(layer);
      else if (component == "{expert}")
        path += std::to_string(expert);
      else
        path += component;
    }
    return path;
  }
  throw Error(ErrorClass::Internal, "model.no_module_path",
              std::string("role ") + role_name(role) + " has no module path");
}

}  // namespace qs
