// Tensor-name grammar (roles, layers, experts, parameters, fusion, MTP) and name patterns with
// vLLM's targets / ignore semantics (docs/formats/compressed-tensors.md, "Target and ignore
// matching"; docs/models/glm_moe_dsa.md, "Tensor names and shapes", "vLLM loading").

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

const std::string kTinyDir = std::string(QS_TEST_DATA_DIR) + "/glm5-tiny";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

std::vector<std::string> tiny_tensor_names() {
  const nlohmann::json index = read_json(kTinyDir + "/model.safetensors.index.json");
  std::vector<std::string> names;
  for (const auto& [name, shard] : index.at("weight_map").items()) names.push_back(name);
  return names;
}

// The index the test itself reads from a name, independently of the parser.
std::optional<std::uint32_t> number_after(const std::string& name, const std::string& marker) {
  const std::size_t at = name.find(marker);
  if (at == std::string::npos) return std::nullopt;
  unsigned value = 0;
  if (std::sscanf(name.c_str() + at + marker.size(), "%u", &value) != 1) return std::nullopt;
  return value;
}

// ---------------------------------------------------------------------------------------------
// The bundled tiny model: every one of its 292 names parses, with the counts its README lists.

TEST(TensorNameFixture, EveryTinyTensorParsesToTheExpectedRoleLayerAndExpert) {
  const std::vector<std::string> names = tiny_tensor_names();
  ASSERT_EQ(names.size(), 292u);
  const auto layout = model_layout_from_config(read_json(kTinyDir + "/config.json"));
  ASSERT_TRUE(layout.has_value());

  std::map<TensorRole, int> counts;
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const ParsedTensorName parsed = parse_tensor_name(name);
    EXPECT_NE(parsed.role, TensorRole::Unknown);
    EXPECT_EQ(parsed.name, name);
    EXPECT_EQ(parsed.module_path + "." + parsed.parameter_name, name);
    EXPECT_EQ(parsed.layer, number_after(name, "model.layers."));
    EXPECT_EQ(parsed.expert, number_after(name, ".experts."));
    EXPECT_FALSE(is_quantization_companion(parsed.parameter));
    ++counts[parsed.role];

    // Dense MLPs below first_k_dense_replace, MoE above, MTP extras only in the MTP layer.
    const TensorCategory group = category(parsed.role);
    if (parsed.layer) {
      if (group == TensorCategory::DenseMlp) {
        EXPECT_FALSE(layout->is_moe_layer(*parsed.layer));
      }
      if (group == TensorCategory::Router || group == TensorCategory::SharedExpert ||
          group == TensorCategory::RoutedExpert) {
        EXPECT_TRUE(layout->is_moe_layer(*parsed.layer));
      }
      EXPECT_EQ(in_mtp_layer(parsed, *layout), *parsed.layer == 4);
      if (group == TensorCategory::MtpExtra) {
        EXPECT_TRUE(in_mtp_layer(parsed, *layout));
      }
    } else {
      EXPECT_FALSE(in_mtp_layer(parsed, *layout));
    }
  }

  // clang-format off
  const std::map<TensorRole, int> expected{
      {TensorRole::Embed, 1},
      {TensorRole::LmHead, 1},
      {TensorRole::FinalNorm, 1},
      {TensorRole::InputNorm, 5},
      {TensorRole::PostAttnNorm, 5},
      {TensorRole::AttnQA, 5},
      {TensorRole::AttnQANorm, 5},
      {TensorRole::AttnQB, 5},
      {TensorRole::AttnKvA, 5},
      {TensorRole::AttnKvANorm, 5},
      {TensorRole::AttnKvB, 5},
      {TensorRole::AttnO, 5},
      {TensorRole::IndexerWqB, 5},
      {TensorRole::IndexerWk, 5},
      {TensorRole::IndexerKNorm, 10},  // weight and bias
      {TensorRole::IndexerWeightsProj, 5},
      {TensorRole::DenseGate, 1},
      {TensorRole::DenseUp, 1},
      {TensorRole::DenseDown, 1},
      {TensorRole::RouterGate, 4},
      {TensorRole::RouterBias, 4},
      {TensorRole::ExpertGate, 64},  // layers 1-4 x 16 experts
      {TensorRole::ExpertUp, 64},
      {TensorRole::ExpertDown, 64},
      {TensorRole::SharedGate, 4},
      {TensorRole::SharedUp, 4},
      {TensorRole::SharedDown, 4},
      {TensorRole::MtpEhProj, 1},
      {TensorRole::MtpEnorm, 1},
      {TensorRole::MtpHnorm, 1},
      {TensorRole::MtpSharedHeadNorm, 1},
  };
  // clang-format on
  EXPECT_EQ(counts, expected);
}

struct Expected {
  const char* name;
  TensorRole role;
  std::optional<std::uint32_t> layer;
  std::optional<std::uint32_t> expert;
  TensorParameter parameter;
  const char* module_path;
};

void expect_parse(const Expected& want) {
  SCOPED_TRACE(want.name);
  const ParsedTensorName parsed = parse_tensor_name(want.name);
  EXPECT_EQ(parsed.role, want.role) << role_name(parsed.role);
  EXPECT_EQ(parsed.layer, want.layer);
  EXPECT_EQ(parsed.expert, want.expert);
  EXPECT_EQ(parsed.parameter, want.parameter) << parameter_name(parsed.parameter);
  EXPECT_EQ(parsed.module_path, want.module_path);
}

TEST(TensorNameFixture, SpotChecksOfTinyNames) {
  // clang-format off
  const std::vector<Expected> cases{
      {"model.embed_tokens.weight", TensorRole::Embed, {}, {}, TensorParameter::Weight,
       "model.embed_tokens"},
      {"lm_head.weight", TensorRole::LmHead, {}, {}, TensorParameter::Weight, "lm_head"},
      {"model.norm.weight", TensorRole::FinalNorm, {}, {}, TensorParameter::Weight, "model.norm"},
      {"model.layers.0.mlp.gate_proj.weight", TensorRole::DenseGate, 0, {},
       TensorParameter::Weight, "model.layers.0.mlp.gate_proj"},
      {"model.layers.2.self_attn.indexer.k_norm.bias", TensorRole::IndexerKNorm, 2, {},
       TensorParameter::Bias, "model.layers.2.self_attn.indexer.k_norm"},
      {"model.layers.3.mlp.gate.e_score_correction_bias", TensorRole::RouterBias, 3, {},
       TensorParameter::EScoreCorrectionBias, "model.layers.3.mlp.gate"},
      {"model.layers.3.mlp.gate.weight", TensorRole::RouterGate, 3, {}, TensorParameter::Weight,
       "model.layers.3.mlp.gate"},
      {"model.layers.1.mlp.experts.15.down_proj.weight", TensorRole::ExpertDown, 1, 15,
       TensorParameter::Weight, "model.layers.1.mlp.experts.15.down_proj"},
      {"model.layers.4.mlp.shared_experts.up_proj.weight", TensorRole::SharedUp, 4, {},
       TensorParameter::Weight, "model.layers.4.mlp.shared_experts.up_proj"},
      {"model.layers.4.shared_head.norm.weight", TensorRole::MtpSharedHeadNorm, 4, {},
       TensorParameter::Weight, "model.layers.4.shared_head.norm"},
      {"model.layers.4.eh_proj.weight", TensorRole::MtpEhProj, 4, {}, TensorParameter::Weight,
       "model.layers.4.eh_proj"},
  };
  // clang-format on
  for (const Expected& want : cases) expect_parse(want);
}

// ---------------------------------------------------------------------------------------------
// Real GLM-5 and DeepSeek-V3 names.

TEST(TensorNameReal, Glm5LayerSeventyEightIsTheMtpLayer) {
  const ModelLayout glm5{78, 3, 1, 1};
  // clang-format off
  const std::vector<Expected> cases{
      {"model.layers.78.eh_proj.weight", TensorRole::MtpEhProj, 78, {}, TensorParameter::Weight,
       "model.layers.78.eh_proj"},
      {"model.layers.78.enorm.weight", TensorRole::MtpEnorm, 78, {}, TensorParameter::Weight,
       "model.layers.78.enorm"},
      {"model.layers.78.hnorm.weight", TensorRole::MtpHnorm, 78, {}, TensorParameter::Weight,
       "model.layers.78.hnorm"},
      {"model.layers.78.self_attn.indexer.wk.weight", TensorRole::IndexerWk, 78, {},
       TensorParameter::Weight, "model.layers.78.self_attn.indexer.wk"},
      {"model.layers.78.mlp.experts.255.up_proj.weight", TensorRole::ExpertUp, 78, 255,
       TensorParameter::Weight, "model.layers.78.mlp.experts.255.up_proj"},
      {"model.layers.77.mlp.experts.255.down_proj.weight", TensorRole::ExpertDown, 77, 255,
       TensorParameter::Weight, "model.layers.77.mlp.experts.255.down_proj"},
      {"model.layers.2.mlp.down_proj.weight", TensorRole::DenseDown, 2, {},
       TensorParameter::Weight, "model.layers.2.mlp.down_proj"},
      {"model.layers.40.self_attn.indexer.weights_proj.weight", TensorRole::IndexerWeightsProj,
       40, {}, TensorParameter::Weight, "model.layers.40.self_attn.indexer.weights_proj"},
  };
  // clang-format on
  for (const Expected& want : cases) expect_parse(want);

  EXPECT_TRUE(in_mtp_layer(parse_tensor_name("model.layers.78.self_attn.q_a_proj.weight"), glm5));
  EXPECT_FALSE(in_mtp_layer(parse_tensor_name("model.layers.77.self_attn.q_a_proj.weight"), glm5));
  EXPECT_FALSE(in_mtp_layer(parse_tensor_name("lm_head.weight"), glm5));
  EXPECT_FALSE(glm5.is_moe_layer(2));
  EXPECT_TRUE(glm5.is_moe_layer(3));
  EXPECT_TRUE(glm5.is_moe_layer(78));
}

TEST(TensorNameReal, DeepSeekV3LayerSixtyOneCarriesItsOwnEmbedAndHead) {
  const ModelLayout deepseek{61, 3, 1, 1};
  // clang-format off
  const std::vector<Expected> cases{
      {"model.layers.61.embed_tokens.weight", TensorRole::MtpEmbed, 61, {},
       TensorParameter::Weight, "model.layers.61.embed_tokens"},
      {"model.layers.61.shared_head.head.weight", TensorRole::MtpSharedHeadLmHead, 61, {},
       TensorParameter::Weight, "model.layers.61.shared_head.head"},
      {"model.layers.61.shared_head.norm.weight", TensorRole::MtpSharedHeadNorm, 61, {},
       TensorParameter::Weight, "model.layers.61.shared_head.norm"},
      {"model.layers.61.eh_proj.weight_scale_inv", TensorRole::MtpEhProj, 61, {},
       TensorParameter::WeightScaleInv, "model.layers.61.eh_proj"},
      {"model.layers.60.self_attn.kv_a_proj_with_mqa.weight_scale_inv", TensorRole::AttnKvA, 60,
       {}, TensorParameter::WeightScaleInv, "model.layers.60.self_attn.kv_a_proj_with_mqa"},
      {"model.layers.0.self_attn.rotary_emb.inv_freq", TensorRole::AttnRotaryEmb, 0, {},
       TensorParameter::InvFreq, "model.layers.0.self_attn.rotary_emb"},
      {"model.layers.5.mlp.experts.0.gate_proj.weight", TensorRole::ExpertGate, 5, 0,
       TensorParameter::Weight, "model.layers.5.mlp.experts.0.gate_proj"},
  };
  // clang-format on
  for (const Expected& want : cases) expect_parse(want);
  for (const char* name :
       {"model.layers.61.embed_tokens.weight", "model.layers.61.mlp.experts.3.down_proj.weight",
        "model.layers.61.input_layernorm.weight"}) {
    EXPECT_TRUE(in_mtp_layer(parse_tensor_name(name), deepseek)) << name;
  }
  EXPECT_FALSE(in_mtp_layer(parse_tensor_name("model.layers.60.mlp.gate.weight"), deepseek));
  EXPECT_EQ(category(TensorRole::MtpEmbed), TensorCategory::MtpExtra);
  EXPECT_EQ(category(TensorRole::MtpSharedHeadLmHead), TensorCategory::MtpExtra);
}

TEST(TensorNameReal, QuantizationCompanionSuffixes) {
  // clang-format off
  const std::vector<std::pair<const char*, TensorParameter>> companions{
      {"weight_packed", TensorParameter::WeightPacked},
      {"weight_scale", TensorParameter::WeightScale},
      {"weight_scale_inv", TensorParameter::WeightScaleInv},
      {"weight_scale_2", TensorParameter::WeightScale2},
      {"weight_global_scale", TensorParameter::WeightGlobalScale},
      {"weight_zero_point", TensorParameter::WeightZeroPoint},
      {"weight_shape", TensorParameter::WeightShape},
      {"weight_g_idx", TensorParameter::WeightGIdx},
      {"input_scale", TensorParameter::InputScale},
      {"input_global_scale", TensorParameter::InputGlobalScale},
      {"input_zero_point", TensorParameter::InputZeroPoint},
      {"output_scale", TensorParameter::OutputScale},
      {"k_scale", TensorParameter::KScale},
      {"v_scale", TensorParameter::VScale},
      {"q_scale", TensorParameter::QScale},
      {"k_zero_point", TensorParameter::KZeroPoint},
      {"v_zero_point", TensorParameter::VZeroPoint},
      {"q_zero_point", TensorParameter::QZeroPoint},
      {"qweight", TensorParameter::GptqQweight},
      {"qzeros", TensorParameter::GptqQzeros},
      {"scales", TensorParameter::GptqScales},
      {"g_idx", TensorParameter::GptqGIdx},
  };
  // clang-format on
  for (const auto& [suffix, parameter] : companions) {
    const std::string name = std::string("model.layers.5.mlp.experts.17.up_proj.") + suffix;
    SCOPED_TRACE(name);
    const ParsedTensorName parsed = parse_tensor_name(name);
    EXPECT_EQ(parsed.role, TensorRole::ExpertUp);
    EXPECT_EQ(parsed.layer, 5u);
    EXPECT_EQ(parsed.expert, 17u);
    EXPECT_EQ(parsed.parameter, parameter);
    EXPECT_EQ(parsed.parameter_name, suffix);
    EXPECT_EQ(parsed.module_path, "model.layers.5.mlp.experts.17.up_proj");
    EXPECT_STREQ(parameter_name(parameter), suffix);
    EXPECT_TRUE(is_quantization_companion(parameter));
  }
  for (TensorParameter plain :
       {TensorParameter::Weight, TensorParameter::Bias, TensorParameter::EScoreCorrectionBias,
        TensorParameter::InvFreq, TensorParameter::Unknown}) {
    EXPECT_FALSE(is_quantization_companion(plain)) << parameter_name(plain);
  }

  // KV-cache scales hang on the attention module itself.
  expect_parse({"model.layers.3.self_attn.k_scale",
                TensorRole::Attention,
                3,
                {},
                TensorParameter::KScale,
                "model.layers.3.self_attn"});
  expect_parse({"lm_head.weight_scale_2",
                TensorRole::LmHead,
                {},
                {},
                TensorParameter::WeightScale2,
                "lm_head"});
  // The router bias is a role of its own only for its own parameter name.
  expect_parse({"model.layers.3.mlp.gate.weight_scale",
                TensorRole::RouterGate,
                3,
                {},
                TensorParameter::WeightScale,
                "model.layers.3.mlp.gate"});
}

// ---------------------------------------------------------------------------------------------
// Names outside the grammar: Unknown, never a throw, still located when possible.

TEST(TensorNameUnknown, NamesOutsideTheGrammarAreUnknown) {
  struct Case {
    std::string name;
    std::optional<std::uint32_t> layer;
    std::optional<std::uint32_t> expert;
  };
  // clang-format off
  const std::vector<Case> cases{
      {"", {}, {}},
      {".", {}, {}},
      {"weight", {}, {}},
      {"model.layers.", {}, {}},
      {"model.layers.3", {}, {}},
      {"model.layers.x.self_attn.q_a_proj.weight", {}, {}},
      {"model.layers.-1.input_layernorm.weight", {}, {}},
      {"model.layers..input_layernorm.weight", {}, {}},
      {"model.layers.03.input_layernorm.weight", {}, {}},
      {"model.layers.1234567890.input_layernorm.weight", {}, {}},
      {"model.layers.99999999999999999999999.input_layernorm.weight", {}, {}},
      {"model.layers.3.input_layernorm", 3, {}},
      {"model.layers.3.input_layernorm.weight.", 3, {}},
      {"model.layers.3.input_layernorm.weight_magic", 3, {}},
      {"model.layers.3.mlp.experts.07.gate_proj.weight", 3, {}},
      {"model.layers.3.mlp.experts.foo.gate_proj.weight", 3, {}},
      {"model.layers.3.mlp.experts.weight", 3, {}},
      {"model.layers.3.mlp.experts.gate_up_proj", 3, {}},       // HF in-memory fused experts
      {"model.layers.3.mlp.experts.7.gate_up_proj.weight", 3, 7},
      {"model.layers.3.self_attn.fused_qkv_a_proj.weight", 3, {}},  // vLLM's fused name
      {"model.layers.3.self_attn.indexer.wk_weights_proj.weight", 3, {}},
      {"model.embed_tokens.weight.extra", {}, {}},
      {"model.embed_tokens", {}, {}},
      {"mtp.layers.0.eh_proj.weight", {}, {}},
      {"transformer.h.0.attn.c_attn.weight", {}, {}},
      {"Model.Layers.3.input_layernorm.weight", {}, {}},
      {std::string("model.layers.3\0.input_layernorm.weight", 38), {}, {}},
      {"\xff\xfe.weight", {}, {}},
  };
  // clang-format on
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ParsedTensorName parsed;
    EXPECT_NO_THROW(parsed = parse_tensor_name(c.name));
    EXPECT_EQ(parsed.role, TensorRole::Unknown);
    EXPECT_EQ(category(parsed.role), TensorCategory::Unknown);
    EXPECT_EQ(parsed.layer, c.layer);
    EXPECT_EQ(parsed.expert, c.expert);
    EXPECT_FALSE(fused_group(parsed).has_value());
    EXPECT_FALSE(vllm_quantized_module(parsed).has_value());
  }
  const ParsedTensorName dotless = parse_tensor_name("weight");
  EXPECT_EQ(dotless.module_path, "weight");
  EXPECT_EQ(dotless.parameter_name, "");
  EXPECT_EQ(dotless.parameter, TensorParameter::Unknown);
  const ParsedTensorName magic = parse_tensor_name("model.layers.3.input_layernorm.weight_magic");
  EXPECT_EQ(magic.module_path, "model.layers.3.input_layernorm");
  EXPECT_EQ(magic.parameter_name, "weight_magic");
  EXPECT_EQ(magic.parameter, TensorParameter::Unknown);
}

// ---------------------------------------------------------------------------------------------
// Role and category names.

TEST(TensorNameStrings, RoleCategoryAndParameterNamesAreStableAndDistinct) {
  std::set<std::string> roles;
  for (int i = 0; i <= static_cast<int>(TensorRole::Unknown); ++i) {
    const char* name = role_name(static_cast<TensorRole>(i));
    ASSERT_NE(name, nullptr);
    EXPECT_TRUE(roles.insert(name).second) << name;
  }
  std::set<std::string> categories;
  for (int i = 0; i <= static_cast<int>(TensorCategory::Unknown); ++i) {
    EXPECT_TRUE(categories.insert(category_name(static_cast<TensorCategory>(i))).second);
  }
  std::set<std::string> parameters;
  for (int i = 0; i <= static_cast<int>(TensorParameter::Unknown); ++i) {
    EXPECT_TRUE(parameters.insert(parameter_name(static_cast<TensorParameter>(i))).second);
  }
  // CLI output and JSON depend on these exact strings.
  EXPECT_STREQ(role_name(TensorRole::AttnQA), "attn.q_a");
  EXPECT_STREQ(role_name(TensorRole::AttnKvB), "attn.kv_b");
  EXPECT_STREQ(role_name(TensorRole::IndexerWeightsProj), "indexer.weights_proj");
  EXPECT_STREQ(role_name(TensorRole::RouterBias), "router.bias");
  EXPECT_STREQ(role_name(TensorRole::ExpertDown), "expert.down");
  EXPECT_STREQ(role_name(TensorRole::MtpSharedHeadLmHead), "mtp.shared_head.head");
  EXPECT_STREQ(role_name(TensorRole::Unknown), "unknown");
  EXPECT_EQ(categories, (std::set<std::string>{"attention", "indexer", "router", "dense_mlp",
                                               "shared_expert", "routed_expert", "norm",
                                               "embedding", "lm_head", "mtp_extra", "unknown"}));
  EXPECT_STREQ(category_name(category(TensorRole::ExpertGate)), "routed_expert");
  EXPECT_STREQ(category_name(category(TensorRole::SharedDown)), "shared_expert");
  EXPECT_STREQ(category_name(category(TensorRole::DenseUp)), "dense_mlp");
  EXPECT_STREQ(category_name(category(TensorRole::IndexerWqB)), "indexer");
  EXPECT_STREQ(category_name(category(TensorRole::IndexerKNorm)), "norm");
  EXPECT_STREQ(category_name(category(TensorRole::RouterBias)), "router");
  EXPECT_STREQ(category_name(category(TensorRole::MtpEnorm)), "mtp_extra");
  EXPECT_STREQ(category_name(category(TensorRole::Embed)), "embedding");
  EXPECT_STREQ(category_name(category(TensorRole::AttnO)), "attention");
}

TEST(TensorNameStrings, LinearRoles) {
  for (TensorRole role : {TensorRole::AttnQA,
                          TensorRole::AttnQB,
                          TensorRole::AttnKvA,
                          TensorRole::AttnKvB,
                          TensorRole::AttnO,
                          TensorRole::IndexerWqB,
                          TensorRole::IndexerWk,
                          TensorRole::IndexerWeightsProj,
                          TensorRole::RouterGate,
                          TensorRole::DenseGate,
                          TensorRole::DenseUp,
                          TensorRole::DenseDown,
                          TensorRole::SharedGate,
                          TensorRole::SharedUp,
                          TensorRole::SharedDown,
                          TensorRole::ExpertGate,
                          TensorRole::ExpertUp,
                          TensorRole::ExpertDown,
                          TensorRole::LmHead,
                          TensorRole::MtpEhProj,
                          TensorRole::MtpSharedHeadLmHead}) {
    EXPECT_TRUE(is_linear(role)) << role_name(role);
  }
  for (TensorRole role : {TensorRole::Embed, TensorRole::MtpEmbed, TensorRole::FinalNorm,
                          TensorRole::InputNorm, TensorRole::PostAttnNorm, TensorRole::AttnQANorm,
                          TensorRole::AttnKvANorm, TensorRole::IndexerKNorm, TensorRole::RouterBias,
                          TensorRole::MtpEnorm, TensorRole::MtpHnorm, TensorRole::MtpSharedHeadNorm,
                          TensorRole::Attention, TensorRole::AttnRotaryEmb, TensorRole::Unknown}) {
    EXPECT_FALSE(is_linear(role)) << role_name(role);
  }
}

// ---------------------------------------------------------------------------------------------
// Fusion.

TEST(TensorNameFusion, GroupsAndMembers) {
  auto group =
      fused_group(parse_tensor_name("model.layers.3.self_attn.kv_a_proj_with_mqa.weight_scale"));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->kind, FusionKind::QkvA);
  EXPECT_EQ(group->name, "model.layers.3.self_attn.fused_qkv_a_proj");
  EXPECT_EQ(group->members,
            (std::vector<std::string>{"model.layers.3.self_attn.q_a_proj",
                                      "model.layers.3.self_attn.kv_a_proj_with_mqa"}));
  EXPECT_EQ(group->member_index, 1u);

  group = fused_group(parse_tensor_name("model.layers.0.mlp.gate_proj.weight"));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->kind, FusionKind::GateUp);
  EXPECT_EQ(group->name, "model.layers.0.mlp.gate_up_proj");
  EXPECT_EQ(group->members, (std::vector<std::string>{"model.layers.0.mlp.gate_proj",
                                                      "model.layers.0.mlp.up_proj"}));
  EXPECT_EQ(group->member_index, 0u);

  group = fused_group(parse_tensor_name("model.layers.9.mlp.shared_experts.up_proj.weight"));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->kind, FusionKind::GateUp);
  EXPECT_EQ(group->name, "model.layers.9.mlp.shared_experts.gate_up_proj");
  EXPECT_EQ(group->member_index, 1u);

  group = fused_group(parse_tensor_name("model.layers.78.mlp.experts.7.gate_proj.weight_packed"));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->kind, FusionKind::ExpertGateUp);
  EXPECT_EQ(group->name, "model.layers.78.mlp.experts.7.gate_up_proj");
  EXPECT_EQ(group->members, (std::vector<std::string>{"model.layers.78.mlp.experts.7.gate_proj",
                                                      "model.layers.78.mlp.experts.7.up_proj"}));

  group = fused_group(parse_tensor_name("model.layers.4.self_attn.indexer.weights_proj.weight"));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->kind, FusionKind::IndexerWkWeightsProj);
  EXPECT_EQ(group->name, "model.layers.4.self_attn.indexer.wk_weights_proj");
  EXPECT_EQ(group->member_index, 1u);

  for (const char* alone :
       {"model.layers.3.mlp.experts.7.down_proj.weight", "model.layers.3.self_attn.o_proj.weight",
        "model.layers.3.self_attn.q_b_proj.weight", "model.layers.3.self_attn.kv_b_proj.weight",
        "model.layers.3.mlp.gate.weight", "model.layers.3.mlp.shared_experts.down_proj.weight",
        "model.layers.3.self_attn.indexer.wq_b.weight", "lm_head.weight",
        "model.layers.78.eh_proj.weight", "model.layers.3.input_layernorm.weight"}) {
    EXPECT_FALSE(fused_group(parse_tensor_name(alone)).has_value()) << alone;
  }
}

TEST(TensorNameFusion, EveryTinyFusedGroupIsComplete) {
  const std::vector<std::string> names = tiny_tensor_names();
  const std::set<std::string> present(names.begin(), names.end());
  int grouped = 0;
  for (const std::string& name : names) {
    const auto group = fused_group(parse_tensor_name(name));
    if (!group) continue;
    ++grouped;
    ASSERT_EQ(group->members.size(), 2u);
    EXPECT_EQ(group->members[group->member_index] + ".weight", name);
    for (const std::string& member : group->members) {
      EXPECT_TRUE(present.count(member + ".weight")) << member;
    }
  }
  // 5 qkv_a pairs + 5 indexer pairs + 1 dense + 4 shared + 64 experts, two members each.
  EXPECT_EQ(grouped, 2 * (5 + 5 + 1 + 4 + 64));
}

// ---------------------------------------------------------------------------------------------
// Layout from config.json.

TEST(TensorNameLayout, FromConfig) {
  const auto tiny = model_layout_from_config(read_json(kTinyDir + "/config.json"));
  ASSERT_TRUE(tiny.has_value());
  EXPECT_EQ(tiny->num_hidden_layers, 4u);
  EXPECT_EQ(tiny->first_k_dense_replace, 1u);
  EXPECT_EQ(tiny->moe_layer_freq, 1u);
  EXPECT_EQ(tiny->num_nextn_predict_layers, 1u);

  const auto deepseek = model_layout_from_config(nlohmann::json::parse(
      R"({"num_hidden_layers": 61, "first_k_dense_replace": 3, "moe_layer_freq": 1,
          "num_nextn_predict_layers": 1})"));
  ASSERT_TRUE(deepseek.has_value());
  EXPECT_TRUE(deepseek->is_mtp_layer(61));
  EXPECT_FALSE(deepseek->is_mtp_layer(60));

  const auto defaults =
      model_layout_from_config(nlohmann::json::parse(R"({"num_hidden_layers": 2})"));
  ASSERT_TRUE(defaults.has_value());
  EXPECT_EQ(defaults->first_k_dense_replace, 0u);
  EXPECT_EQ(defaults->moe_layer_freq, 1u);

  const auto every_other = ModelLayout{10, 1, 2, 0};
  EXPECT_FALSE(every_other.is_moe_layer(0));
  EXPECT_FALSE(every_other.is_moe_layer(1));
  EXPECT_TRUE(every_other.is_moe_layer(2));
  EXPECT_FALSE(every_other.is_moe_layer(3));

  for (const char* broken :
       {R"({})", R"([])", R"({"num_hidden_layers": null})", R"({"num_hidden_layers": -1})",
        R"({"num_hidden_layers": "61"})", R"({"num_hidden_layers": 6.5})",
        R"({"num_hidden_layers": 61, "moe_layer_freq": 0})",
        R"({"num_hidden_layers": 61, "first_k_dense_replace": true})",
        R"({"num_hidden_layers": 99999999999})"}) {
    EXPECT_FALSE(model_layout_from_config(nlohmann::json::parse(broken)).has_value()) << broken;
  }
}

// ---------------------------------------------------------------------------------------------
// NamePattern.

bool module_matches(const char* pattern, const char* module,
                    PlainPatternMeaning plain = PlainPatternMeaning::Glob) {
  return NamePattern::parse(pattern, plain).matches_module(module);
}

TEST(NamePatternRegex, MatchesLikePythonReMatchAnchoredAtTheStartOnly) {
  // The router regex from the spec, with and without '$'.
  EXPECT_TRUE(module_matches(R"(re:.*mlp\.gate$)", "model.layers.3.mlp.gate"));
  EXPECT_FALSE(module_matches(R"(re:.*mlp\.gate$)", "model.layers.3.mlp.gate_proj"));
  EXPECT_FALSE(module_matches(R"(re:.*mlp\.gate$)", "model.layers.3.mlp.gate_up_proj"));
  EXPECT_TRUE(module_matches("re:.*mlp.gate", "model.layers.3.mlp.gate_proj"));
  EXPECT_TRUE(module_matches("re:.*mlp.gate", "model.layers.0.mlp.gate_up_proj"));

  // Anchored at the start: no implicit ".*" in front.
  EXPECT_FALSE(module_matches(R"(re:layers\.3)", "model.layers.3.mlp.gate"));
  // Not anchored at the end.
  EXPECT_TRUE(module_matches(R"(re:model\.layers\.3)", "model.layers.30.mlp.gate"));
  EXPECT_FALSE(module_matches(R"(re:model\.layers\.3\.)", "model.layers.30.mlp.gate"));

  // GLM-5 example ignore (escaped) vs. the GLM-4.7 one (unescaped dots also match layer 10).
  EXPECT_TRUE(module_matches(R"(re:^model\.layers\.[0-2]\..*)", "model.layers.2.mlp.down_proj"));
  EXPECT_FALSE(module_matches(R"(re:^model\.layers\.[0-2]\..*)", "model.layers.3.mlp.down_proj"));
  EXPECT_FALSE(module_matches(R"(re:^model\.layers\.[0-2]\..*)", "model.layers.10.mlp.down_proj"));
  EXPECT_TRUE(module_matches("re:model.layers.[0-2].*", "model.layers.10.mlp.down_proj"));

  // ".*experts.*" also catches the shared experts.
  EXPECT_TRUE(module_matches("re:.*experts.*", "model.layers.3.mlp.experts.7.down_proj"));
  EXPECT_TRUE(module_matches("re:.*experts.*", "model.layers.3.mlp.shared_experts.down_proj"));
  EXPECT_FALSE(module_matches("re:.*experts.*", "model.layers.3.mlp.gate"));

  EXPECT_TRUE(module_matches(R"(re:.*indexer\.weights_proj$)",
                             "model.layers.3.self_attn.indexer.weights_proj"));
  EXPECT_TRUE(module_matches("re:a|model", "model.norm"));  // alternation at the start
  EXPECT_TRUE(module_matches("re:", "anything"));           // re.match("", s) always matches
  EXPECT_TRUE(module_matches("re:.*", ""));
  EXPECT_TRUE(module_matches(R"(re:[(?i)]odel)", "iodel"));  // '(?i' inside brackets is literal
  EXPECT_TRUE(module_matches(R"(re:\\A)", R"(\A)"));         // escaped backslash, then 'A'

  const NamePattern lm_head = NamePattern::parse(R"(re:lm_head$)");
  EXPECT_EQ(lm_head.kind(), NamePattern::Kind::Regex);
  EXPECT_EQ(lm_head.text(), "re:lm_head$");
  EXPECT_TRUE(lm_head.matches_tensor("lm_head.weight"));
  EXPECT_FALSE(lm_head.matches_module("lm_head.weight"));
}

TEST(NamePatternRegex, InvalidOrPythonOnlyRegexesThrowNamingThePattern) {
  const std::vector<std::pair<const char*, const char*>> cases{
      {"re:([", "pattern.invalid_regex"},
      {"re:(a", "pattern.invalid_regex"},
      {"re:a)", "pattern.invalid_regex"},
      {"re:(?P<layer>\\d+)", "pattern.python_only_regex"},
      {"re:(?<=mlp\\.)gate", "pattern.python_only_regex"},
      {"re:\\Amodel", "pattern.python_only_regex"},
      {"re:lm_head\\Z", "pattern.python_only_regex"},
      {"re:(?i)LM_HEAD", "pattern.python_only_regex"},
      {"re:(?#comment)x", "pattern.python_only_regex"},
      {"re:(?U)a+", "pattern.python_only_regex"},
      {"re:\\Qa.b\\E", "pattern.python_only_regex"},
      {"re:\\pL", "pattern.python_only_regex"},
      {"re:(a{1000}){1000}", "pattern.invalid_regex"},  // beyond RE2's program size
  };
  for (const auto& [pattern, kind] : cases) {
    SCOPED_TRACE(pattern);
    try {
      NamePattern::parse(pattern);
      ADD_FAILURE() << "no throw";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), kind);
      EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
      EXPECT_NE(error.detail().find(pattern), std::string::npos) << error.detail();
    }
    // The vLLM dialect compiles regexes the same way.
    EXPECT_THROW(NamePattern::parse(pattern, PlainPatternMeaning::ExactName), Error);
  }
}

TEST(NamePatternRegex, CatastrophicBacktrackingPatternsMatchInLinearTime) {
  // A backtracking engine (std::regex, Python's re) takes 2^n steps on these; the test would
  // not finish. RE2 answers at once.
  const std::string name = std::string(100000, 'a') + "b";
  EXPECT_FALSE(module_matches("re:(a+)+$", name.c_str()));
  EXPECT_FALSE(module_matches("re:(a|aa)*$", name.c_str()));
  EXPECT_FALSE(module_matches("re:(a*)*c", name.c_str()));
  EXPECT_TRUE(module_matches("re:(a+)+b$", name.c_str()));
}

TEST(NamePatternGlob, ShellWildcardsOverTheWholeName) {
  EXPECT_TRUE(module_matches("model.layers.*.mlp.experts.*.down_proj",
                             "model.layers.3.mlp.experts.7.down_proj"));
  EXPECT_FALSE(module_matches("model.layers.*.mlp.experts.*.down_proj",
                              "model.layers.3.mlp.shared_experts.down_proj"));
  EXPECT_FALSE(module_matches("model.layers.*.mlp.experts.*.down_proj",
                              "model.layers.3.mlp.experts.7.down_proj_extra"));
  // '*' crosses dots, like fnmatch.
  EXPECT_TRUE(module_matches("*.mlp.gate", "model.layers.3.mlp.gate"));
  EXPECT_FALSE(module_matches("*.mlp.gate", "model.layers.3.mlp.gate_proj"));
  EXPECT_TRUE(module_matches("*experts*", "model.layers.3.mlp.shared_experts.up_proj"));
  EXPECT_TRUE(module_matches("*", ""));
  EXPECT_TRUE(module_matches("**", "lm_head"));
  // '?' is one character, brackets one of a set; the glob is anchored at both ends.
  EXPECT_TRUE(module_matches("model.layers.?.mlp.gate", "model.layers.3.mlp.gate"));
  EXPECT_FALSE(module_matches("model.layers.?.mlp.gate", "model.layers.30.mlp.gate"));
  EXPECT_TRUE(module_matches("model.layers.[0-2].*", "model.layers.1.mlp.gate_proj"));
  EXPECT_FALSE(module_matches("model.layers.[0-2].*", "model.layers.10.mlp.gate_proj"));
  EXPECT_FALSE(module_matches("model.layers.[0-2].*", "model.layers.3.mlp.gate_proj"));
  EXPECT_TRUE(module_matches("model.layers.[!0-2].*", "model.layers.3.mlp.gate_proj"));
  EXPECT_FALSE(module_matches("model.layers.[!0-2].*", "model.layers.1.mlp.gate_proj"));
  EXPECT_TRUE(module_matches("model.layers.[13579].*", "model.layers.7.x"));
  EXPECT_TRUE(module_matches("a[]]b", "a]b"));  // ']' first in the set is a member
  EXPECT_TRUE(module_matches("a[!]]b", "axb"));
  EXPECT_FALSE(module_matches("a[!]]b", "a]b"));
  EXPECT_TRUE(module_matches("a[*]b", "a*b"));  // literal star
  EXPECT_FALSE(module_matches("a[*]b", "axb"));
  EXPECT_TRUE(module_matches("a[x-]b", "a-b"));  // trailing '-' is literal
  EXPECT_TRUE(module_matches("x*y*z", "xaaybbz"));
  EXPECT_FALSE(module_matches("x*y*z", "xaaybb"));

  const NamePattern glob = NamePattern::parse("model.layers.*.mlp.gate");
  EXPECT_EQ(glob.kind(), NamePattern::Kind::Glob);
  EXPECT_TRUE(glob.matches_tensor("model.layers.5.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(glob.matches_tensor("model.layers.5.mlp.gate.weight"));
  EXPECT_FALSE(glob.matches_tensor("model.layers.5.mlp.gate_proj.weight"));

  const NamePattern exact = NamePattern::parse("lm_head");
  EXPECT_EQ(exact.kind(), NamePattern::Kind::Exact);
  EXPECT_TRUE(exact.matches_module("lm_head"));
  EXPECT_TRUE(exact.matches_tensor("lm_head.weight"));
  EXPECT_FALSE(exact.matches_module("model.lm_head"));
  // A dotless tensor name is its own module path, as in parse_tensor_name.
  EXPECT_TRUE(exact.matches_tensor("lm_head"));

  try {
    NamePattern::parse("model.layers.[0-2.mlp");
    ADD_FAILURE() << "no throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "pattern.invalid_glob");
    EXPECT_NE(error.detail().find("model.layers.[0-2.mlp"), std::string::npos);
  }
}

TEST(NamePatternExact, VllmDialectTreatsWildcardsAsPlainCharacters) {
  const NamePattern star =
      NamePattern::parse("model.layers.*.mlp.gate", PlainPatternMeaning::ExactName);
  EXPECT_EQ(star.kind(), NamePattern::Kind::Exact);
  EXPECT_FALSE(star.matches_module("model.layers.3.mlp.gate"));
  EXPECT_TRUE(star.matches_module("model.layers.*.mlp.gate"));
  EXPECT_NO_THROW(NamePattern::parse("model.layers.[0-2", PlainPatternMeaning::ExactName));
  EXPECT_TRUE(module_matches(R"(re:.*mlp\.gate$)", "model.layers.3.mlp.gate",
                             PlainPatternMeaning::ExactName));
}

// ---------------------------------------------------------------------------------------------
// vLLM targets / ignore.

const char* kFusedQkvA = "DeepSeekV2FusedQkvAProjLinear";

VllmTargetMatcher matcher(std::vector<std::string> targets, std::vector<std::string> ignore) {
  return VllmTargetMatcher(targets, ignore);
}

TEST(VllmTargets, LinearClassTargetWithIgnoreList) {
  const auto m = matcher({"Linear"}, {"lm_head", R"(re:.*mlp\.gate$)"});
  const VllmResolution qkv =
      m.resolve_linear("model.layers.0.self_attn.fused_qkv_a_proj", kFusedQkvA);
  EXPECT_EQ(qkv.decision, VllmDecision::Targeted);
  EXPECT_EQ(qkv.target, 0u);
  EXPECT_EQ(qkv.step, TargetMatchStep::ClassName);
  EXPECT_EQ(m.resolve_linear("model.layers.0.self_attn.o_proj", "RowParallelLinear").decision,
            VllmDecision::Targeted);
  EXPECT_EQ(m.resolve_linear("lm_head", "ParallelLMHead").decision, VllmDecision::Ignored);
  EXPECT_EQ(m.resolve_linear("model.layers.3.mlp.gate", "GateLinear").decision,
            VllmDecision::Ignored);
  EXPECT_EQ(m.resolve_linear("model.layers.3.mlp.shared_experts.gate_up_proj",
                             "MergedColumnParallelLinear")
                .decision,
            VllmDecision::Targeted);
  EXPECT_EQ(m.target(0), "Linear");
  // "Linear" is not a substring of ParallelLMHead: an lm_head left out of ignore is unmatched.
  EXPECT_EQ(matcher({"Linear"}, {}).resolve_linear("lm_head", "ParallelLMHead").decision,
            VllmDecision::Unmatched);
}

TEST(VllmTargets, ClassTargetsAreCaseInsensitiveSubstringsAndRegexesMatchClassesToo) {
  EXPECT_EQ(matcher({"linear"}, {})
                .resolve_linear("model.layers.0.self_attn.o_proj", "RowParallelLinear")
                .step,
            TargetMatchStep::ClassName);
  const auto parallel = matcher({"ParallelLinear"}, {});
  EXPECT_EQ(
      parallel.resolve_linear("model.layers.0.self_attn.q_b_proj", "ColumnParallelLinear").decision,
      VllmDecision::Targeted);
  EXPECT_EQ(
      parallel.resolve_linear("model.layers.0.self_attn.indexer.wq_b", "ReplicatedLinear").decision,
      VllmDecision::Unmatched);
  const VllmResolution by_regex =
      matcher({"re:.*Linear$"}, {})
          .resolve_linear("model.layers.0.self_attn.o_proj", "RowParallelLinear");
  EXPECT_EQ(by_regex.decision, VllmDecision::Targeted);
  EXPECT_EQ(by_regex.step, TargetMatchStep::ClassName);
  // A layer path target is never a class match.
  EXPECT_EQ(matcher({"model.layers.0.self_attn.o_proj"}, {})
                .resolve_linear("model.layers.0.self_attn.q_b_proj", "ColumnParallelLinear")
                .decision,
            VllmDecision::Unmatched);
}

TEST(VllmTargets, FirstMatchInTargetOrderAndNamesBeforeClasses) {
  const auto m =
      matcher({"Linear", R"(re:.*self_attn\..*)", "model.layers.0.self_attn.o_proj"}, {});
  const VllmResolution o = m.resolve_linear("model.layers.0.self_attn.o_proj", "RowParallelLinear");
  EXPECT_EQ(o.target, 1u);  // the regex comes first among name matches; "Linear" is a class match
  EXPECT_EQ(o.step, TargetMatchStep::LayerName);
  const VllmResolution down = m.resolve_linear("model.layers.0.mlp.down_proj", "RowParallelLinear");
  EXPECT_EQ(down.target, 0u);
  EXPECT_EQ(down.step, TargetMatchStep::ClassName);
}

TEST(VllmTargets, ClassMatchBeatsFusedShardMatch) {
  // The spec's {A: ["re:.*q_proj$"], B: ["Linear"]} trap, in MLA form.
  const auto trap = matcher({R"(re:.*q_a_proj$)", R"(re:.*kv_a_proj_with_mqa$)", "Linear"}, {});
  const VllmResolution with_class =
      trap.resolve_linear("model.layers.3.self_attn.fused_qkv_a_proj", kFusedQkvA);
  EXPECT_EQ(with_class.target, 2u);
  EXPECT_EQ(with_class.step, TargetMatchStep::ClassName);

  const auto shards = matcher({R"(re:.*q_a_proj$)", R"(re:.*kv_a_proj_with_mqa$)"}, {});
  const VllmResolution by_shards =
      shards.resolve_linear("model.layers.3.self_attn.fused_qkv_a_proj", kFusedQkvA);
  EXPECT_EQ(by_shards.decision, VllmDecision::Targeted);
  EXPECT_EQ(by_shards.target, 0u);  // the first shard's target
  EXPECT_EQ(by_shards.step, TargetMatchStep::FusedShards);
  EXPECT_EQ(by_shards.shard_targets, (std::vector<std::optional<std::size_t>>{0u, 1u}));

  const VllmResolution half =
      matcher({R"(re:.*q_a_proj$)"}, {})
          .resolve_linear("model.layers.3.self_attn.fused_qkv_a_proj", kFusedQkvA);
  EXPECT_EQ(half.decision, VllmDecision::Unmatched);
  EXPECT_EQ(half.shard_targets, (std::vector<std::optional<std::size_t>>{0u, std::nullopt}));

  // Checkpoint shard names as exact targets work through the fused step too.
  const auto exact = matcher({"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"}, {});
  const VllmResolution gate_up =
      exact.resolve_linear("model.layers.0.mlp.gate_up_proj", "MergedColumnParallelLinear");
  EXPECT_EQ(gate_up.decision, VllmDecision::Targeted);
  EXPECT_EQ(gate_up.step, TargetMatchStep::FusedShards);

  // A regex that names the fused module matches it directly.
  EXPECT_EQ(matcher({R"(re:.*fused_qkv_a_proj$)"}, {})
                .resolve_linear("model.layers.3.self_attn.fused_qkv_a_proj", kFusedQkvA)
                .step,
            TargetMatchStep::LayerName);
}

TEST(VllmTargets, FusedModuleIsIgnoredOnlyWhenAllShardsAre) {
  const std::string fused = "model.layers.3.self_attn.fused_qkv_a_proj";
  EXPECT_EQ(matcher({"Linear"}, {R"(re:.*q_a_proj$)"}).resolve_linear(fused, kFusedQkvA).decision,
            VllmDecision::ShardsDisagree);
  EXPECT_EQ(matcher({"Linear"}, {R"(re:.*q_a_proj$)", R"(re:.*kv_a_proj_with_mqa$)"})
                .resolve_linear(fused, kFusedQkvA)
                .decision,
            VllmDecision::Ignored);
  EXPECT_EQ(matcher({"Linear"}, {"model.layers.3.self_attn.q_a_proj",
                                 "model.layers.3.self_attn.kv_a_proj_with_mqa"})
                .resolve_linear(fused, kFusedQkvA)
                .decision,
            VllmDecision::Ignored);
  // The fused name itself, verbatim, also works.
  EXPECT_EQ(matcher({"Linear"}, {fused}).resolve_linear(fused, kFusedQkvA).decision,
            VllmDecision::Ignored);
  // A regex on the fused name is not consulted for a fused module: only its shards are.
  EXPECT_EQ(
      matcher({"Linear"}, {R"(re:.*fused_qkv_a_proj$)"}).resolve_linear(fused, kFusedQkvA).decision,
      VllmDecision::Targeted);
  // Rule 3 of the spec: "re:.*mlp\.gate.*" catches gate_proj but not up_proj.
  const auto hazard = matcher({"Linear"}, {R"(re:.*mlp\.gate.*)"});
  EXPECT_EQ(hazard.ignore_state("model.layers.3.mlp.gate_up_proj"), IgnoreState::ShardsDisagree);
  EXPECT_EQ(hazard.resolve_linear("model.layers.3.mlp.gate_up_proj", "MergedColumnParallelLinear")
                .decision,
            VllmDecision::ShardsDisagree);
  EXPECT_EQ(hazard.ignore_state("model.layers.3.mlp.shared_experts.gate_up_proj"),
            IgnoreState::NotIgnored);
  EXPECT_EQ(hazard.ignore_state("model.layers.3.mlp.gate"), IgnoreState::Ignored);
}

TEST(VllmTargets, ClassNamesInIgnoreAreNotHonoured) {
  const auto m = matcher({"Linear"}, {"Linear", "RowParallelLinear"});
  EXPECT_EQ(m.resolve_linear("model.layers.0.self_attn.o_proj", "RowParallelLinear").decision,
            VllmDecision::Targeted);
}

TEST(VllmTargets, UnmatchedWhenNoTargetFits) {
  const auto m = matcher({R"(re:.*mlp\..*)"}, {});
  EXPECT_EQ(m.resolve_linear("model.layers.3.self_attn.o_proj", "RowParallelLinear").decision,
            VllmDecision::Unmatched);
  EXPECT_EQ(matcher({}, {})
                .resolve_linear("model.layers.3.self_attn.o_proj", "RowParallelLinear")
                .decision,
            VllmDecision::Unmatched);
}

TEST(VllmTargets, FusedMoeConsultsExpertZerosProjections) {
  const std::string experts = "model.layers.3.mlp.experts";
  // "Linear" stands for FusedMoE too.
  const VllmResolution linear =
      matcher({R"(re:.*self_attn\..*)", "Linear"}, {}).resolve_fused_moe(experts);
  EXPECT_EQ(linear.decision, VllmDecision::Targeted);
  EXPECT_EQ(linear.target, 1u);
  EXPECT_EQ(linear.step, TargetMatchStep::ClassName);

  const VllmResolution regex = matcher({"re:.*experts.*"}, {}).resolve_fused_moe(experts);
  EXPECT_EQ(regex.target, 0u);
  EXPECT_EQ(regex.step, TargetMatchStep::LayerName);

  EXPECT_EQ(matcher({"FusedMoE"}, {}).resolve_fused_moe(experts).decision, VllmDecision::Targeted);
  EXPECT_EQ(matcher({"Linear", "FusedMoE"}, {}).resolve_fused_moe(experts).target, 1u);
  EXPECT_EQ(matcher({"Linear"}, {}).resolve_linear(experts, "FusedMoE").decision,
            VllmDecision::Unmatched);  // Linears never get the alias

  const VllmResolution per_projection =
      matcher({"re:.*gate_proj$", "re:.*up_proj$", "re:.*down_proj$"}, {})
          .resolve_fused_moe(experts);
  EXPECT_EQ(per_projection.decision, VllmDecision::Targeted);
  EXPECT_EQ(per_projection.target, 2u);  // down_proj's, the one vLLM keeps
  EXPECT_EQ(per_projection.shard_targets, (std::vector<std::optional<std::size_t>>{0u, 1u, 2u}));

  EXPECT_EQ(matcher({"re:.*gate_proj$"}, {}).resolve_fused_moe(experts).decision,
            VllmDecision::ShardsDisagree);
  EXPECT_EQ(
      matcher({"Linear"}, {R"(re:.*experts\.0\.down_proj$)"}).resolve_fused_moe(experts).decision,
      VllmDecision::ShardsDisagree);
  EXPECT_EQ(matcher({"Linear"}, {R"(re:.*mlp\.experts.*)"}).resolve_fused_moe(experts).decision,
            VllmDecision::Ignored);
  // The FusedMoE prefix itself is not what vLLM checks against ignore.
  EXPECT_EQ(matcher({"Linear"}, {experts}).resolve_fused_moe(experts).decision,
            VllmDecision::Targeted);
  // Only expert 0 is consulted.
  EXPECT_EQ(matcher({"Linear"}, {R"(re:.*experts\.5\..*)"}).resolve_fused_moe(experts).decision,
            VllmDecision::Targeted);
  EXPECT_EQ(matcher({}, {}).resolve_fused_moe(experts).decision, VllmDecision::Unmatched);
}

TEST(VllmTargets, InvalidPatternsThrow) {
  EXPECT_THROW(matcher({"re:(["}, {}), Error);
  EXPECT_THROW(matcher({"Linear"}, {"re:(?i)lm_head"}), Error);
}

TEST(VllmModules, CheckpointTensorsMapToTheModulesVllmBuilds) {
  struct Case {
    const char* tensor;
    const char* module;
    const char* class_name;
    bool fused_moe;
  };
  // clang-format off
  const std::vector<Case> cases{
      {"model.layers.3.self_attn.q_a_proj.weight", "model.layers.3.self_attn.fused_qkv_a_proj",
       kFusedQkvA, false},
      {"model.layers.3.self_attn.kv_a_proj_with_mqa.weight_packed",
       "model.layers.3.self_attn.fused_qkv_a_proj", kFusedQkvA, false},
      {"model.layers.3.self_attn.kv_b_proj.weight", "model.layers.3.self_attn.kv_b_proj",
       "ColumnParallelLinear", false},
      {"model.layers.3.self_attn.o_proj.weight", "model.layers.3.self_attn.o_proj",
       "RowParallelLinear", false},
      {"model.layers.3.self_attn.indexer.wq_b.weight", "model.layers.3.self_attn.indexer.wq_b",
       "ReplicatedLinear", false},
      {"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.gate_up_proj",
       "MergedColumnParallelLinear", false},
      {"model.layers.3.mlp.shared_experts.down_proj.weight",
       "model.layers.3.mlp.shared_experts.down_proj", "RowParallelLinear", false},
      {"model.layers.3.mlp.experts.7.down_proj.weight", "model.layers.3.mlp.experts", "FusedMoE",
       true},
      {"lm_head.weight", "lm_head", "ParallelLMHead", false},
      {"model.layers.61.shared_head.head.weight", "model.layers.61.shared_head.head",
       "ParallelLMHead", false},
  };
  // clang-format on
  for (const Case& c : cases) {
    SCOPED_TRACE(c.tensor);
    const auto module = vllm_quantized_module(parse_tensor_name(c.tensor));
    ASSERT_TRUE(module.has_value());
    EXPECT_EQ(module->name, c.module);
    EXPECT_EQ(module->class_name, c.class_name);
    EXPECT_EQ(module->fused_moe, c.fused_moe);
  }
  for (const char* never : {"model.layers.3.mlp.gate.weight", "model.layers.78.eh_proj.weight",
                            "model.layers.3.self_attn.indexer.wk.weight",
                            "model.layers.3.self_attn.indexer.weights_proj.weight",
                            "model.layers.3.input_layernorm.weight", "model.embed_tokens.weight",
                            "model.layers.61.embed_tokens.weight"}) {
    EXPECT_FALSE(vllm_quantized_module(parse_tensor_name(never)).has_value()) << never;
  }
}

// Every module vLLM builds for the tiny model resolves, under two published config shapes.
std::map<std::string, VllmModule> tiny_vllm_modules() {
  std::map<std::string, VllmModule> modules;
  for (const std::string& name : tiny_tensor_names()) {
    if (auto module = vllm_quantized_module(parse_tensor_name(name))) {
      modules.emplace(module->name, *module);
    }
  }
  return modules;
}

TEST(VllmModules, TinyModelUnderLinearTargetsAndAnIgnoreList) {
  const auto modules = tiny_vllm_modules();
  // Per layer fused_qkv_a, q_b, kv_b, o, wq_b (x5); dense gate_up + down; per MoE layer shared
  // gate_up + down + experts (x4); lm_head.
  ASSERT_EQ(modules.size(), 5u * 5 + 2 + 3 * 4 + 1);
  const auto m =
      matcher({"Linear"}, {"lm_head", R"(re:.*mlp\.gate$)", R"(re:^model\.layers\.4\..*)"});
  std::map<VllmDecision, int> decisions;
  for (const auto& [name, module] : modules) {
    const VllmResolution resolution = m.resolve(module);
    ++decisions[resolution.decision];
    const bool ignored = name == "lm_head" || name.starts_with("model.layers.4.");
    EXPECT_EQ(resolution.decision, ignored ? VllmDecision::Ignored : VllmDecision::Targeted)
        << name << ": " << vllm_decision_name(resolution.decision);
  }
  EXPECT_EQ(decisions[VllmDecision::Ignored], 1 + 5 + 3);
}

TEST(VllmModules, TinyModelUnderTheGlm5ExampleGroups) {
  // LLMC glm5_example: attention group + mlp group, dense layers, routers, weights_proj and
  // lm_head ignored (the tiny model's only dense layer is 0).
  const auto m = matcher({R"(re:.*self_attn\..*)", R"(re:.*mlp\..*)"},
                         {R"(re:^model\.layers\.0\..*)", R"(re:.*mlp\.gate.*)",
                          R"(re:.*indexer\.weights_proj$)", "lm_head"});
  for (const auto& [name, module] : tiny_vllm_modules()) {
    SCOPED_TRACE(name);
    const VllmResolution resolution = m.resolve(module);
    if (name == "lm_head" || name.starts_with("model.layers.0.")) {
      EXPECT_EQ(resolution.decision, VllmDecision::Ignored);
    } else {
      ASSERT_EQ(resolution.decision, VllmDecision::Targeted);
      EXPECT_EQ(resolution.target, name.find(".self_attn.") != std::string::npos ? 0u : 1u);
      EXPECT_EQ(resolution.step, TargetMatchStep::LayerName);
    }
  }
}

TEST(VllmModules, DecisionNames) {
  EXPECT_STREQ(vllm_decision_name(VllmDecision::Targeted), "targeted");
  EXPECT_STREQ(vllm_decision_name(VllmDecision::Ignored), "ignored");
  EXPECT_STREQ(vllm_decision_name(VllmDecision::Unmatched), "unmatched");
  EXPECT_STREQ(vllm_decision_name(VllmDecision::ShardsDisagree), "shards_disagree");
}

}  // namespace
}  // namespace qs
