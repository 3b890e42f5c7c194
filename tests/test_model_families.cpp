// The model families as data, at library level: lookup from config.json, the one config reader
// and its checks, the per-layer MoE rules, the layout each family implies, the parser's roles
// and the engine-fused groups for every family's names. test_model_families_cli.cpp runs the
// commands on each family.

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <set>
#include <string>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/checkpoint_layout.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/synthetic_model.h"
#include "qs/ckpt/model/tensor_name.h"
#include "family_presets.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::error_kind_of;

using testing::as_plain_json;
using testing::preset_config;
using testing::preset_spec;

std::string read_kind(const nlohmann::json& config) {
  return error_kind_of([&] { dimensions_from_config(config, "config.json"); });
}

struct FamilyCase {
  const char* preset;
  ModelFamilyId family;
};
constexpr FamilyCase kFamilyCases[] = {
    {"tiny", ModelFamilyId::GlmMoeDsa},
    {"deepseek-v3-tiny", ModelFamilyId::DeepseekV3},
    {"qwen3-moe-tiny", ModelFamilyId::Qwen3Moe},
};

// ---- Lookup ----

TEST(ModelFamilies, LookedUpByModelTypeThenArchitectures) {
  EXPECT_EQ(find_model_family(nlohmann::json{{"model_type", "glm_moe_dsa"}})->id,
            ModelFamilyId::GlmMoeDsa);
  EXPECT_EQ(find_model_family(nlohmann::json{{"model_type", "deepseek_v3"}})->id,
            ModelFamilyId::DeepseekV3);
  EXPECT_EQ(find_model_family(nlohmann::json{{"model_type", "qwen3_moe"}})->id,
            ModelFamilyId::Qwen3Moe);
  // Kimi-K2 names its own model_type but DeepSeek-V3's architecture.
  EXPECT_EQ(find_model_family(nlohmann::json{{"model_type", "kimi_k2"}})->id,
            ModelFamilyId::DeepseekV3);
  EXPECT_EQ(find_model_family(nlohmann::json{{"model_type", "something_new"},
                                             {"architectures", {"DeepseekV3ForCausalLM"}}})
                ->id,
            ModelFamilyId::DeepseekV3);
  EXPECT_EQ(find_model_family(nlohmann::json{{"architectures", {"Qwen3MoeForCausalLM"}}})->id,
            ModelFamilyId::Qwen3Moe);
  EXPECT_EQ(find_model_family(nlohmann::json{{"model_type", "llama"}}), nullptr);
  EXPECT_EQ(find_model_family(nlohmann::json::array()), nullptr);
  EXPECT_EQ(model_family_named("qwen3_moe")->id, ModelFamilyId::Qwen3Moe);
  EXPECT_EQ(model_family_named("qwen3"), nullptr);
  for (const auto& family : model_families()) EXPECT_EQ(&model_family(family.id), &family);
}

TEST(ModelFamilies, UnknownFamilyIsBadInputNamingWhatTheConfigSays) {
  const nlohmann::json llama{{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}};
  try {
    model_family_of(llama, "/m/config.json");
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "config.unknown_family");
    EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
    EXPECT_NE(std::string(error.what()).find("/m/config.json"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("llama"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("qwen3_moe"), std::string::npos);
  }
  EXPECT_EQ(read_kind(llama), "config.unknown_family");
}

// ---- The config reader ----

TEST(ModelFamilies, ConfigRoundTripsThroughTheOneReader) {
  for (const auto& [name, family] : kFamilyCases) {
    SCOPED_TRACE(name);
    const SyntheticModelSpec spec = preset_spec(name);
    const ModelDimensions read = dimensions_from_config(as_plain_json(config_json(spec)), "config.json");
    EXPECT_EQ(read.family, family);
    const auto read_specs = tensor_specs(read);
    const auto spec_specs = tensor_specs(spec);
    ASSERT_EQ(read_specs.size(), spec_specs.size());
    for (std::size_t i = 0; i < read_specs.size(); ++i) {
      EXPECT_EQ(read_specs[i].name, spec_specs[i].name);
      EXPECT_EQ(read_specs[i].shape, spec_specs[i].shape);
      EXPECT_EQ(read_specs[i].dtype, spec_specs[i].dtype);
    }
    if (model_family(family).attention == AttentionKind::Gqa) {
      EXPECT_EQ(read.num_key_value_heads, spec.num_key_value_heads);
      EXPECT_EQ(read.head_dim, spec.head_dim);
    } else {
      EXPECT_EQ(read.num_key_value_heads, spec.num_attention_heads);  // MLA writes MHA
    }
    EXPECT_EQ(read.n_group, spec.n_group);
    EXPECT_EQ(read.topk_group, spec.topk_group);
    EXPECT_EQ(read.scoring_func, spec.scoring_func);
    EXPECT_EQ(read.topk_method, spec.topk_method);
    EXPECT_EQ(read.norm_topk_prob, spec.norm_topk_prob);
    EXPECT_EQ(read.rope_interleave, spec.rope_interleave);
    EXPECT_EQ(read.rope_theta, spec.rope_theta);
    EXPECT_EQ(read.rms_norm_eps, spec.rms_norm_eps);
    EXPECT_EQ(read.routed_scaling_factor, spec.routed_scaling_factor);
    EXPECT_EQ(read.mlp_only_layers, spec.mlp_only_layers);
    EXPECT_EQ(read.has_indexer, family == ModelFamilyId::GlmMoeDsa);
    EXPECT_EQ(read.rope_scaling.has_value(), spec.rope_scaling.has_value());
    if (read.rope_scaling) {
      EXPECT_EQ(read.rope_scaling->type, "yarn");
      EXPECT_EQ(read.rope_scaling->factor, spec.rope_scaling->factor);
      EXPECT_EQ(read.rope_scaling->original_max_position_embeddings,
                spec.rope_scaling->original_max_position_embeddings);
      EXPECT_EQ(read.rope_scaling->mscale_all_dim, spec.rope_scaling->mscale_all_dim);
    }
  }
}

TEST(ModelFamilies, ReadsTheRealDeepseekV3AndQwen3Configs) {
  // The keys of the released config.json files, as they spell them.
  const auto deepseek = dimensions_from_config(nlohmann::json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "first_k_dense_replace": 3, "hidden_size": 7168, "intermediate_size": 18432,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1,
    "norm_topk_prob": true, "num_attention_heads": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
    "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
    "type": "yarn"}, "rope_theta": 10000, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "topk_group": 4, "topk_method": "noaux_tc",
    "v_head_dim": 128, "vocab_size": 129280,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                            "quant_method": "fp8", "weight_block_size": [128, 128]}})"),
                                               "config.json");
  EXPECT_EQ(deepseek.family, ModelFamilyId::DeepseekV3);
  EXPECT_FALSE(deepseek.has_indexer);
  EXPECT_EQ(deepseek.n_group, 8u);
  EXPECT_EQ(deepseek.topk_group, 4u);
  EXPECT_EQ(deepseek.rope_scaling->factor, 40.0);
  EXPECT_EQ(deepseek.rms_norm_eps, 1e-6);
  EXPECT_EQ(deepseek.rope_theta, 10000.0);
  EXPECT_FALSE(deepseek.is_moe_layer(2));
  EXPECT_TRUE(deepseek.is_moe_layer(3));
  EXPECT_TRUE(deepseek.is_moe_layer(61));  // the MTP layer
  // 61 decoder layers + 1 MTP: 3 dense, 59 MoE with 256 experts; the MTP layer stores its own
  // embedding and head.
  const auto tensors = checkpoint_layout(deepseek);
  EXPECT_EQ(tensors.size(), 1u + 3 * (9 + 3) + 59 * (9 + 2 + 256 * 3 + 3) + 6 + 2);
  EXPECT_TRUE(std::any_of(tensors.begin(), tensors.end(), [](const LayoutTensor& t) {
    return t.spec.name == "model.layers.61.shared_head.head.weight" &&
           t.spec.shape == Shape{129280, 7168};
  }));

  const auto qwen = dimensions_from_config(nlohmann::json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645,
    "head_dim": 128, "hidden_size": 2048, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [],
    "model_type": "qwen3_moe", "moe_intermediate_size": 768, "norm_topk_prob": true,
    "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 48, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": null,
    "tie_word_embeddings": false, "vocab_size": 151936})"),
                                           "config.json");
  EXPECT_EQ(qwen.family, ModelFamilyId::Qwen3Moe);
  EXPECT_EQ(qwen.n_routed_experts, 128u);
  EXPECT_EQ(qwen.num_key_value_heads, 4u);
  EXPECT_EQ(qwen.scoring_func, RouterScoring::Softmax);
  EXPECT_EQ(qwen.topk_method, TopkMethod::Greedy);
  EXPECT_FALSE(qwen.rope_interleave);
  EXPECT_TRUE(qwen.norm_topk_prob);
  EXPECT_FALSE(qwen.rope_scaling.has_value());
  // 48 MoE layers: 2 norms + 6 attention + router + 128 experts x 3; no bias, no shared.
  EXPECT_EQ(checkpoint_layout(qwen).size(), 1u + 48 * (2 + 6 + 1 + 128 * 3) + 2);
  EXPECT_EQ(total_tensor_bytes(qwen) / 1'000'000'000, 61u);  // Qwen3-30B-A3B: ~61 GB BF16
}

TEST(ModelFamilies, MoeLayerRulesFollowEachFamily) {
  auto deepseek = dimensions_from_config(preset_config("deepseek-v3-tiny",
                                                   [](auto& c) {
                                                     c["moe_layer_freq"] = 2;
                                                     c["num_hidden_layers"] = 6;
                                                   }),
                                         "config.json");
  // vLLM: MoE iff i >= first_k_dense_replace (1) and i % moe_layer_freq (2) == 0.
  for (std::uint64_t layer = 0; layer < 7; ++layer)
    EXPECT_EQ(deepseek.is_moe_layer(layer), layer >= 1 && layer % 2 == 0) << layer;
  const auto layout = model_layout_from_config(
      preset_config("deepseek-v3-tiny", [](auto& c) { c["moe_layer_freq"] = 2; }));
  ASSERT_TRUE(layout);
  EXPECT_FALSE(layout->is_moe_layer(1));
  EXPECT_TRUE(layout->is_moe_layer(2));

  auto qwen = dimensions_from_config(preset_config("qwen3-moe-tiny",
                                               [](auto& c) {
                                                 c["decoder_sparse_step"] = 2;
                                                 c["mlp_only_layers"] = {3};
                                                 c["num_hidden_layers"] = 6;
                                               }),
                                     "config.json");
  // transformers: MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0.
  for (std::uint64_t layer = 0; layer < 6; ++layer)
    EXPECT_EQ(qwen.is_moe_layer(layer), layer != 3 && (layer + 1) % 2 == 0) << layer;
  const auto qwen_layout = model_layout_from_config(preset_config("qwen3-moe-tiny"));
  ASSERT_TRUE(qwen_layout);
  EXPECT_EQ(qwen_layout->moe_rule, MoeLayerRule::SparseStep);
  EXPECT_FALSE(qwen_layout->is_moe_layer(0));  // mlp_only_layers: [0]
  EXPECT_TRUE(qwen_layout->is_moe_layer(1));
  EXPECT_FALSE(qwen_layout->is_mtp_layer(3));
  // The layout of a MoE-layer-free layer has a dense MLP and no router.
  const auto specs = tensor_specs(qwen);
  auto has = [&](const std::string& name) {
    return std::any_of(specs.begin(), specs.end(), [&](const auto& t) { return t.name == name; });
  };
  EXPECT_TRUE(has("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_TRUE(has("model.layers.1.mlp.gate.weight"));
  EXPECT_FALSE(has("model.layers.1.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(has("model.layers.3.mlp.down_proj.weight"));
  EXPECT_FALSE(has("model.layers.4.mlp.experts.0.up_proj.weight"));
  EXPECT_TRUE(has("model.layers.5.mlp.experts.15.up_proj.weight"));
}

// Keys that contradict each other: one error naming the rule (or the key) for each.
TEST(ModelFamilies, ContradictoryConfigsAreRefusedNamingTheRule) {
  struct Case {
    const char* preset;
    std::function<void(nlohmann::json&)> edit;
    const char* kind;
  };
  const Case cases[] = {
      {"deepseek-v3-tiny", [](auto& c) { c["n_group"] = 3; }, "layout.invalid_dimensions"},
      {"deepseek-v3-tiny", [](auto& c) { c["topk_group"] = 5; }, "layout.invalid_dimensions"},
      // 4 experts per token cannot come from 1 kept group of 4 groups x 4 experts... they can;
      // from 1 group of 2 experts they cannot.
      {"deepseek-v3-tiny",
       [](auto& c) {
         c["n_group"] = 8;
         c["topk_group"] = 1;
       },
       "layout.invalid_dimensions"},
      {"deepseek-v3-tiny", [](auto& c) { c["moe_layer_freq"] = 0; }, "layout.invalid_dimensions"},
      {"deepseek-v3-tiny", [](auto& c) { c["scoring_func"] = "relu"; }, "config.invalid_value"},
      {"deepseek-v3-tiny", [](auto& c) { c["topk_method"] = 3; }, "config.invalid_value"},
      {"deepseek-v3-tiny", [](auto& c) { c["rope_scaling"] = "yarn"; }, "config.invalid_value"},
      {"deepseek-v3-tiny", [](auto& c) { c["rope_scaling"]["factor"] = -1; },
       "config.invalid_value"},
      {"deepseek-v3-tiny", [](auto& c) { c["norm_topk_prob"] = "yes"; }, "config.invalid_value"},
      {"deepseek-v3-tiny", [](auto& c) { c.erase("q_lora_rank"); }, "config.missing_key"},
      {"qwen3-moe-tiny", [](auto& c) { c["num_key_value_heads"] = 3; },
       "layout.invalid_dimensions"},
      {"qwen3-moe-tiny", [](auto& c) { c["head_dim"] = 63; }, "layout.invalid_dimensions"},
      {"qwen3-moe-tiny", [](auto& c) { c["mlp_only_layers"] = {7}; }, "layout.invalid_dimensions"},
      {"qwen3-moe-tiny", [](auto& c) { c["mlp_only_layers"] = {"0"}; }, "config.invalid_value"},
      {"qwen3-moe-tiny", [](auto& c) { c["decoder_sparse_step"] = 0; },
       "layout.invalid_dimensions"},
      {"qwen3-moe-tiny", [](auto& c) { c["num_experts_per_tok"] = 17; },
       "layout.invalid_dimensions"},
      {"qwen3-moe-tiny", [](auto& c) { c.erase("num_experts"); }, "config.missing_key"},
      {"tiny", [](auto& c) { c["n_group"] = 3; }, "layout.invalid_dimensions"},
  };
  for (const auto& [name, edit, kind] : cases) {
    const auto config = preset_config(name, edit);
    EXPECT_EQ(read_kind(config), kind) << name << ": " << config.dump();
  }
  // The untouched configs read fine.
  for (const auto& [name, family] : kFamilyCases)
    EXPECT_EQ(read_kind(preset_config(name)), "no error") << name;
}

// ---- Layout, names, roles ----

TEST(ModelFamilies, EveryLayoutTensorParsesToItsRole) {
  for (const auto& [name, family] : kFamilyCases) {
    SCOPED_TRACE(name);
    std::set<TensorRole> roles;
    for (const auto& tensor : checkpoint_layout(preset_spec(name))) {
      const auto parsed_name = parse_tensor_name(tensor.spec.name);
      EXPECT_EQ(parsed_name.role, tensor.role) << tensor.spec.name;
      EXPECT_NE(parsed_name.role, TensorRole::Unknown) << tensor.spec.name;
      EXPECT_EQ(is_linear(parsed_name.role), tensor.kind == TensorKind::Linear) << tensor.spec.name;
      roles.insert(tensor.role);
    }
    const bool mla = model_family(family).attention == AttentionKind::Mla;
    EXPECT_EQ(roles.contains(TensorRole::AttnQA), mla);
    EXPECT_EQ(roles.contains(TensorRole::AttnQ), !mla);
    EXPECT_EQ(roles.contains(TensorRole::AttnKNorm), !mla);
    EXPECT_EQ(roles.contains(TensorRole::IndexerWk), family == ModelFamilyId::GlmMoeDsa);
    EXPECT_EQ(roles.contains(TensorRole::RouterBias), family != ModelFamilyId::Qwen3Moe);
    EXPECT_EQ(roles.contains(TensorRole::SharedGate), family != ModelFamilyId::Qwen3Moe);
    EXPECT_EQ(roles.contains(TensorRole::MtpEhProj), family != ModelFamilyId::Qwen3Moe);
    EXPECT_EQ(roles.contains(TensorRole::MtpSharedHeadLmHead), family == ModelFamilyId::DeepseekV3);
    EXPECT_EQ(roles.contains(TensorRole::MtpEmbed), family == ModelFamilyId::DeepseekV3);
  }
}

TEST(ModelFamilies, GqaNamesParseToTheirRolesAndCategories) {
  struct Expected {
    const char* name;
    TensorRole role;
    const char* role_text;
    TensorCategory category;
  };
  const Expected names[] = {
      {"model.layers.7.self_attn.q_proj.weight", TensorRole::AttnQ, "attn.q",
       TensorCategory::Attention},
      {"model.layers.7.self_attn.k_proj.weight_scale", TensorRole::AttnK, "attn.k",
       TensorCategory::Attention},
      {"model.layers.7.self_attn.v_proj.weight_packed", TensorRole::AttnV, "attn.v",
       TensorCategory::Attention},
      {"model.layers.7.self_attn.q_norm.weight", TensorRole::AttnQNorm, "attn.q_norm",
       TensorCategory::Norm},
      {"model.layers.7.self_attn.k_norm.weight", TensorRole::AttnKNorm, "attn.k_norm",
       TensorCategory::Norm},
      {"model.layers.7.mlp.gate.weight", TensorRole::RouterGate, "router.gate",
       TensorCategory::Router},
      {"model.layers.7.mlp.experts.127.down_proj.weight", TensorRole::ExpertDown, "expert.down",
       TensorCategory::RoutedExpert},
  };
  for (const auto& expected : names) {
    const auto p = parse_tensor_name(expected.name);
    EXPECT_EQ(p.role, expected.role) << expected.name;
    EXPECT_STREQ(role_name(p.role), expected.role_text);
    EXPECT_EQ(parse_role_name(expected.role_text), expected.role);
    EXPECT_EQ(category(p.role), expected.category) << expected.name;
    EXPECT_EQ(p.layer, 7u);
  }
  // The indexer's k_norm is not attention's.
  EXPECT_EQ(parse_tensor_name("model.layers.7.self_attn.indexer.k_norm.weight").role,
            TensorRole::IndexerKNorm);
  EXPECT_EQ(role_module_path(TensorRole::AttnKNorm, 7), "model.layers.7.self_attn.k_norm");
  EXPECT_EQ(role_module_path(TensorRole::ExpertUp, 2, 9), "model.layers.2.mlp.experts.9.up_proj");
  EXPECT_EQ(role_module_path(TensorRole::RouterBias, 4), "model.layers.4.mlp.gate");
  EXPECT_EQ(role_module_path(TensorRole::LmHead, 4), "lm_head");
  EXPECT_EQ(error_kind_of([] { role_module_path(TensorRole::Unknown); }), "model.no_module_path");
}

TEST(ModelFamilies, FusedGroupsFollowEachFamilysEngine) {
  const auto q = fused_group(parse_tensor_name("model.layers.2.self_attn.k_proj.weight"));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->kind, FusionKind::Qkv);
  EXPECT_EQ(q->name, "model.layers.2.self_attn.qkv_proj");
  EXPECT_EQ(q->members, (std::vector<std::string>{"model.layers.2.self_attn.q_proj",
                                                  "model.layers.2.self_attn.k_proj",
                                                  "model.layers.2.self_attn.v_proj"}));
  EXPECT_EQ(q->member_index, 1u);
  EXPECT_FALSE(fused_group(parse_tensor_name("model.layers.2.self_attn.o_proj.weight")));
  EXPECT_FALSE(fused_group(parse_tensor_name("model.layers.2.self_attn.q_norm.weight")));

  // Every fused role a family's layout holds is one of the family's declared fusions, and
  // every member of the group is in the layout.
  for (const auto& [name, family_id] : kFamilyCases) {
    SCOPED_TRACE(name);
    const auto& family = model_family(family_id);
    std::set<std::string> modules;
    const auto tensors = checkpoint_layout(preset_spec(name));
    for (const auto& tensor : tensors)
      modules.insert(parse_tensor_name(tensor.spec.name).module_path);
    std::set<FusionKind> seen;
    for (const auto& tensor : tensors) {
      const auto group = fused_group(parse_tensor_name(tensor.spec.name));
      if (!group) continue;
      seen.insert(group->kind);
      for (const auto& member : group->members) EXPECT_TRUE(modules.contains(member)) << member;
    }
    EXPECT_EQ(seen, std::set<FusionKind>(family.fusions.begin(), family.fusions.end()));
  }
}

}  // namespace
}  // namespace qs
