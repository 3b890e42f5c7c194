// The commands on every model family: synth → validate clean, validate against contradicting
// tensors and configs, the transformers-made fixtures, unknown families, inspect's role totals,
// recipes' role/category rules, and a split fused group. test_model_families.cpp holds the
// library-level checks.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/model/checkpoint_layout.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/synthetic_model.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/ckpt/validate/validation.h"
#include "family_presets.h"
#include "test_support.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::error_kind_of;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

using testing::as_plain_json;
using testing::preset_config;
using testing::preset_spec;

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

struct FamilyCase {
  const char* preset;
  ModelFamilyId family;
};
constexpr FamilyCase kFamilyCases[] = {
    {"tiny", ModelFamilyId::GlmMoeDsa},
    {"deepseek-v3-tiny", ModelFamilyId::DeepseekV3},
    {"qwen3-moe-tiny", ModelFamilyId::Qwen3Moe},
};

// ---- synth → validate, per family ----

class FamilyCheckpoint : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(FamilyCheckpoint, SynthesizedCheckpointValidatesClean) {
  ScratchDirectory scratch("family_synth");
  const fs::path out = scratch.path() / "model";
  write_synthetic_checkpoint(preset_spec(GetParam().preset), out);
  const Checkpoint checkpoint = Checkpoint::open(out);
  const auto report = validate_checkpoint(checkpoint, {});
  for (const auto& finding : report.findings)
    ADD_FAILURE() << finding.kind << " " << finding.tensor << ": " << finding.message;
  EXPECT_NE(std::find(report.checks_run.begin(), report.checks_run.end(), "layout"),
            report.checks_run.end());
  require_layout_matches_config(checkpoint);

  // The same through the CLI: synth by preset, validate and inspect.
  const fs::path cli_out = scratch.path() / "cli";
  const auto synth =
      run_cli(std::string("synth --preset ") + GetParam().preset + " --out " + quoted(cli_out));
  ASSERT_EQ(synth.exit_code, 0) << synth.output;
  EXPECT_EQ(testing::directory_contents(cli_out), testing::directory_contents(out));
  const auto validate = run_cli("validate " + quoted(cli_out));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  EXPECT_EQ(validate.output.find("not_checked"), std::string::npos) << validate.output;
}

TEST_P(FamilyCheckpoint, ValidateFindsTensorsThatContradictTheConfig) {
  ScratchDirectory scratch("family_broken");
  const fs::path good = scratch.path() / "good";
  write_synthetic_checkpoint(preset_spec(GetParam().preset), good);
  // Drop one o_proj, and give the last layer's router one expert too few.
  const fs::path broken = scratch.path() / "broken";
  testing::rewrite_checkpoint(good, broken, [](testing::EditableTensor& tensor) {
    if (tensor.spec.name == "model.layers.1.self_attn.o_proj.weight") return false;
    if (tensor.spec.name == "model.layers.3.mlp.gate.weight") {
      tensor.spec.shape[0] -= 1;
      tensor.bytes.resize(tensor.bytes.size() - tensor.spec.shape[1] * 2);
    }
    return true;
  });
  fs::copy_file(good / "config.json", broken / "config.json", fs::copy_options::overwrite_existing);
  const auto report = validate_checkpoint(Checkpoint::open(broken), {});
  std::map<std::string, std::string> kinds;
  for (const auto& finding : report.findings) kinds[finding.tensor] = finding.kind;
  EXPECT_EQ(kinds["model.layers.1.self_attn.o_proj.weight"], "layout.missing_tensor");
  EXPECT_EQ(kinds["model.layers.3.mlp.gate.weight"], "layout.shape_mismatch");
  // A job refuses the source before planning (exit 2, layout.config_mismatch).
  EXPECT_EQ(error_kind_of([&] { require_layout_matches_config(Checkpoint::open(broken)); }),
            "layout.config_mismatch");
  const auto quantize = run_cli("quantize " + quoted(broken) + " " +
                                quoted(scratch.path() / "out") + " --scheme nvfp4 --dry-run");
  EXPECT_EQ(quantize.exit_code, 2) << quantize.output;
  EXPECT_NE(quantize.output.find("config.json implies this tensor"), std::string::npos)
      << quantize.output;
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyCheckpoint, ::testing::ValuesIn(kFamilyCases),
                         [](const auto& info) {
                           std::string name = info.param.preset;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// ---- The transformers-made fixtures (tests/data/README.md) ----

TEST(ModelFamilies, TransformersFixturesInspectAndValidateClean) {
  struct Fixture {
    const char* directory;
    ModelFamilyId family;
  };
  for (const auto& [directory, family] : {Fixture{"deepseek-v3-tiny", ModelFamilyId::DeepseekV3},
                                          Fixture{"qwen3-moe-tiny", ModelFamilyId::Qwen3Moe}}) {
    SCOPED_TRACE(directory);
    const fs::path path = fs::path(QS_TEST_DATA_DIR) / directory;
    const Checkpoint checkpoint = Checkpoint::open(path);
    const auto dimensions = dimensions_from_config(checkpoint.config(), "config.json");
    EXPECT_EQ(dimensions.family, family);
    // Every stored tensor is one the family's layout names, with its shape.
    const auto layout = checkpoint_layout(dimensions);
    EXPECT_EQ(layout.size(), checkpoint.tensors().size());
    for (const auto& tensor : layout) {
      const auto location = checkpoint.find(tensor.spec.name);
      ASSERT_TRUE(location) << tensor.spec.name;
      EXPECT_EQ(location->info->shape, tensor.spec.shape) << tensor.spec.name;
    }
    const auto report = validate_checkpoint(checkpoint, {});
    for (const auto& finding : report.findings)
      ADD_FAILURE() << finding.kind << " " << finding.tensor << ": " << finding.message;
    const auto inspect = run_cli("inspect --json " + quoted(path));
    ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
    const auto summary = nlohmann::json::parse(inspect.standard_output);
    EXPECT_FALSE(summary["by_category"].contains("unknown")) << summary["by_category"].dump();
    EXPECT_EQ(summary["mtp_layers"].size(), dimensions.num_nextn_predict_layers);
  }
}

// ---- Bad configs through the CLI ----

TEST(ModelFamilies, ContradictoryConfigStopsJobsWithExit2) {
  ScratchDirectory scratch("family_contradiction");
  const fs::path model = scratch.path() / "model";
  write_synthetic_checkpoint(preset_spec("deepseek-v3-tiny"), model);
  auto config = preset_config("deepseek-v3-tiny", [](auto& c) { c["n_group"] = 3; });
  write_text(model / "config.json", config.dump(2));
  const auto validate = run_cli("validate " + quoted(model));
  EXPECT_EQ(validate.exit_code, 1) << validate.output;
  EXPECT_NE(validate.output.find("layout.invalid_dimensions"), std::string::npos);
  EXPECT_NE(validate.output.find("n_group divides n_routed_experts"), std::string::npos);
  const auto quantize = run_cli("quantize " + quoted(model) + " " + quoted(scratch.path() / "out") +
                                " --scheme nvfp4");
  EXPECT_EQ(quantize.exit_code, 2) << quantize.output;
  EXPECT_FALSE(fs::exists(scratch.path() / "out"));
}

TEST(ModelFamilies, UnknownFamilyIsAWarningForValidateAndAnErrorForTheRunner) {
  ScratchDirectory scratch("family_unknown");
  const fs::path model = scratch.path() / "model";
  write_synthetic_checkpoint(preset_spec("qwen3-moe-tiny"), model);
  auto config = preset_config("qwen3-moe-tiny", [](auto& c) {
    c["model_type"] = "qwen4_moe";
    c["architectures"] = {"Qwen4MoeForCausalLM"};
  });
  write_text(model / "config.json", config.dump(2));
  // inspect lists the tensors and roles; validate checks all but the layout.
  const auto inspect = run_cli("inspect --json " + quoted(model));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  const auto summary = nlohmann::json::parse(inspect.standard_output);
  EXPECT_GT(summary["tensors"].get<int>(), 0);
  const auto validate = run_cli("validate " + quoted(model));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  EXPECT_NE(validate.output.find("layout.not_checked"), std::string::npos) << validate.output;
  // Running the model needs the architecture.
  const auto generate = run_cli("generate " + quoted(model) + " --prompt hi --max-new 1");
  EXPECT_EQ(generate.exit_code, 2) << generate.output;
  EXPECT_NE(generate.output.find("not a model family we know"), std::string::npos)
      << generate.output;
  EXPECT_NE(generate.output.find("config.json"), std::string::npos) << generate.output;
}

// ---- inspect and recipes on every family ----

TEST_P(FamilyCheckpoint, InspectTotalsRolesByCategory) {
  ScratchDirectory scratch("family_inspect");
  const fs::path model = scratch.path() / "model";
  const auto spec = preset_spec(GetParam().preset);
  write_synthetic_checkpoint(spec, model);
  const auto inspect = run_cli("inspect --json " + quoted(model));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  const auto summary = nlohmann::json::parse(inspect.standard_output);
  std::map<std::string, int> expected;
  for (const auto& tensor : checkpoint_layout(spec))
    ++expected[category_name(category(tensor.role))];
  EXPECT_EQ(expected.count("unknown"), 0u);
  for (const auto& [name, count] : expected)
    EXPECT_EQ(summary["by_category"][name]["tensors"].get<int>(), count) << name;
  EXPECT_EQ(summary["mtp_layers"].size(), spec.num_nextn_predict_layers);
  EXPECT_EQ(summary["layers"].size(), spec.num_hidden_layers);
}

TEST_P(FamilyCheckpoint, RecipeRolesAndCategoriesSelectTheFamilysTensors) {
  ScratchDirectory scratch("family_recipe");
  const fs::path model = scratch.path() / "model";
  const auto spec = preset_spec(GetParam().preset);
  write_synthetic_checkpoint(spec, model);
  const fs::path recipe = scratch.path() / "recipe.yaml";
  // Attention in NVFP4 by category, routed experts by role (vLLM's FusedMoE needs all three
  // alike), everything else kept.
  // indexer.wq_b and attn.q name roles only some families have: elsewhere they select nothing.
  write_text(recipe, R"(description: per-family roles
rules:
  - name: indexer query
    role: indexer.wq_b
    action: nvfp4
  - name: gqa query
    role: [attn.q, attn.k, attn.v]
    action: nvfp4
  - name: attention
    category: attention
    action: nvfp4
  - name: experts
    role: [expert.gate, expert.up, expert.down]
    action: nvfp4
)");
  const fs::path out = scratch.path() / "out";
  const auto quantize = run_cli("quantize " + quoted(model) + " " + quoted(out) + " --recipe " +
                                quoted(recipe) + " --format compressed-tensors");
  ASSERT_EQ(quantize.exit_code, 0) << quantize.output;
  const Checkpoint result = Checkpoint::open(out);
  std::map<TensorRole, int> quantized;
  for (const auto& location : result.tensors()) {
    const auto p = parse_tensor_name(location.info->name);
    if (p.parameter == TensorParameter::WeightPacked) ++quantized[p.role];
  }
  const bool gqa = model_family(spec.family).attention == AttentionKind::Gqa;
  const int layers = static_cast<int>(spec.layer_count());
  int moe_layers = 0;
  for (std::uint64_t layer = 0; layer < spec.layer_count(); ++layer)
    moe_layers += spec.is_moe_layer(layer) ? 1 : 0;
  EXPECT_EQ(quantized[TensorRole::AttnO], layers);
  EXPECT_EQ(quantized[gqa ? TensorRole::AttnK : TensorRole::AttnKvB], layers);
  EXPECT_EQ(quantized[TensorRole::AttnQ], gqa ? layers : 0);
  EXPECT_EQ(quantized[TensorRole::IndexerWqB], spec.has_indexer ? layers : 0);
  EXPECT_EQ(quantized[TensorRole::ExpertDown],
            moe_layers * static_cast<int>(spec.n_routed_experts));
  EXPECT_EQ(quantized[TensorRole::ExpertUp], quantized[TensorRole::ExpertDown]);
  EXPECT_EQ(quantized[TensorRole::SharedUp], 0);
  EXPECT_EQ(quantized[TensorRole::DenseUp], 0);
  EXPECT_EQ(quantized[TensorRole::AttnQNorm], 0);
  const auto validate = run_cli("validate " + quoted(out));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

TEST(ModelFamilies, SplitQkvIsRefusedLikeEveryFusedGroup) {
  ScratchDirectory scratch("family_fused_split");
  const fs::path model = scratch.path() / "model";
  write_synthetic_checkpoint(preset_spec("qwen3-moe-tiny"), model);
  const fs::path recipe = scratch.path() / "recipe.yaml";
  write_text(recipe, R"(description: k alone
rules:
  - name: k only
    role: attn.k
    action: nvfp4
)");
  const auto quantize = run_cli("quantize " + quoted(model) + " " + quoted(scratch.path() / "out") +
                                " --recipe " + quoted(recipe) + " --dry-run");
  EXPECT_EQ(quantize.exit_code, 2) << quantize.output;
  EXPECT_NE(quantize.output.find("into model.layers.0.self_attn.qkv_proj"), std::string::npos)
      << quantize.output;
  EXPECT_NE(quantize.output.find("need the same scheme"), std::string::npos) << quantize.output;
}

TEST(ModelFamilies, SpliceSelectorsUseTheFamilysRoles) {
  ScratchDirectory scratch("family_splice");
  const fs::path base = scratch.path() / "base";
  const fs::path int4 = scratch.path() / "int4";
  write_synthetic_checkpoint(preset_spec("qwen3-moe-tiny"), base);
  ASSERT_EQ(run_cli("quantize " + quoted(base) + " " + quoted(int4) + " --scheme int4").exit_code,
            0);
  // A role this family lacks selects nothing, with splice's warning; q/k/v move together.
  const fs::path out = scratch.path() / "out";
  const auto splice =
      run_cli("splice " + quoted(out) + " --base " + quoted(base) + " --take " + quoted(int4) +
              ":role=indexer.wq_b --take " + quoted(int4) + ":role=attn.q,attn.k,attn.v");
  ASSERT_EQ(splice.exit_code, 0) << splice.output;
  EXPECT_NE(splice.output.find("role=indexer.wq_b' selected no module"), std::string::npos)
      << splice.output;
  EXPECT_NE(splice.output.find("role=attn.q,attn.k,attn.v': 12 modules"), std::string::npos)
      << splice.output;
  EXPECT_EQ(run_cli("validate " + quoted(out)).exit_code, 0);
  // Taking k_proj alone would split the engine's qkv_proj across sources.
  const auto split = run_cli("splice " + quoted(scratch.path() / "split") + " --base " +
                             quoted(base) + " --take " + quoted(int4) + ":role=attn.k");
  EXPECT_EQ(split.exit_code, 2) << split.output;
  EXPECT_NE(split.output.find("qkv_proj"), std::string::npos) << split.output;
  EXPECT_FALSE(fs::exists(scratch.path() / "split" / "config.json"));
}

}  // namespace
}  // namespace qs
