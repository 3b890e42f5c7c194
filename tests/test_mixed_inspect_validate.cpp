// `validate`'s "config" check and `inspect`'s per-group table on mixed and single-scheme
// checkpoints: our own outputs (--scheme int8 / int4, the seed 000 recipe, the seed 001 NVFP4
// recipe in both layouts) validate clean, and each way of breaking a config by hand — a module
// dropped from ignore, a group that double-targets, gate/up split across groups, a dense
// Linear targeted, an NVFP4 module ignored or excluded — gives its finding and exit 1.

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/file_io.h"
#include "quantized_outputs.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::has_finding;
using testing::QuantizedOutputs;
using testing::quoted;
using testing::run_cli;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();

std::size_t count_of(const std::string& output, const std::string& text) {
  std::size_t count = 0;
  for (auto at = output.find(text); at != std::string::npos; at = output.find(text, at + 1))
    ++count;
  return count;
}

using ConfigEdit = std::function<void(nlohmann::json& block)>;

class MixedInspectValidate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    outputs_ = std::make_unique<QuantizedOutputs>("mixed-inspect-validate");
    outputs_->quantize("int8", "--scheme int8");
    outputs_->quantize("int4", "--scheme int4");
    outputs_->quantize("seed000",
                       "--recipe " + quoted(shipped_recipe("glm5-w8a16-int8mix-seed000.yaml")));
    for (const char* format : {"modelopt", "compressed-tensors"})
      outputs_->quantize(std::string("nvfp4-") + format,
                         "--recipe " + quoted(shipped_recipe("glm5-nvfp4-seed001.yaml")) +
                             " --param boundary_layers=1 --format " + format);
  }
  static void TearDownTestSuite() { outputs_.reset(); }
  static std::filesystem::path output(const std::string& name) { return outputs_->path(name); }

  // A copy of `name`'s output with `edit` applied to config.json's quantization_config (and,
  // with `edit_hf_quant_config`, to hf_quant_config.json's "quantization"); validated.
  testing::CliResult validate_edited(const std::string& name, const ConfigEdit& edit,
                                     bool edit_hf_quant_config = false) {
    const auto broken =
        outputs_->broken_copy(name, testing::kUnchanged,
                              [&](nlohmann::json& config) { edit(config["quantization_config"]); });
    if (edit_hf_quant_config) {
      auto hf = nlohmann::json::parse(read_text_file(broken / "hf_quant_config.json"));
      edit(hf["quantization"]);
      write_file_atomically(broken / "hf_quant_config.json", hf.dump(2));
    }
    return run_cli("validate " + quoted(broken));
  }

  static inline std::unique_ptr<QuantizedOutputs> outputs_;
};

void remove_entry(nlohmann::json& list, const std::string& entry) {
  const auto before = list.size();
  list.erase(std::remove(list.begin(), list.end(), nlohmann::json(entry)), list.end());
  ASSERT_EQ(list.size(), before - 1) << entry << " not in " << list.dump();
}

TEST_F(MixedInspectValidate, OwnOutputsValidateClean) {
  for (const char* name :
       {"int8", "int4", "seed000", "nvfp4-modelopt", "nvfp4-compressed-tensors"}) {
    auto result = run_cli("validate " + quoted(output(name)) + " --json");
    EXPECT_EQ(result.exit_code, 0) << name << "\n" << result.output;
    const auto report = nlohmann::json::parse(result.standard_output);
    EXPECT_NE(std::find(report["checks"].begin(), report["checks"].end(), "config"),
              report["checks"].end());
    for (const auto& finding : report["findings"])
      EXPECT_NE(finding["severity"], "problem") << name << ": " << finding.dump();
  }
}

TEST_F(MixedInspectValidate, ModuleDroppedFromIgnoreIsTargetedByTheLinearGroup) {
  // seed000: group_1 (INT4 routed experts) holds the class target "Linear".
  const std::string module = "model.layers.0.self_attn.o_proj";
  auto result = validate_edited(
      "seed000", [&](nlohmann::json& block) { remove_entry(block["ignore"], module); });
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(has_finding(result.output, "config.scheme_mismatch", module + ".weight"))
      << result.output;
}

TEST_F(MixedInspectValidate, DenseLinearNeitherTargetedNorIgnored) {
  const std::string module = "model.layers.0.self_attn.o_proj";
  auto result = validate_edited("seed000", [&](nlohmann::json& block) {
    remove_entry(block["ignore"], module);
    // Without a class target nothing picks the module up.
    block["config_groups"]["group_1"]["targets"] = {
        "re:^model\\.layers\\.[1-3]\\.mlp\\.experts\\.\\d+\\.(gate|up|down)_proj$"};
  });
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(has_finding(result.output, "config.uncovered_linear", module + ".weight"))
      << result.output;
  EXPECT_EQ(count_of(result.output, "config."), 1u) << result.output;
}

TEST_F(MixedInspectValidate, GroupThatDoubleTargetsAModule) {
  // An exact name in a new group wins in compressed-tensors (exact names before regexes);
  // vLLM takes the first name or regex match in config order: group_0's regex.
  const std::string module = "model.layers.2.self_attn.o_proj";
  auto result = validate_edited("seed000", [&](nlohmann::json& block) {
    auto group = block["config_groups"]["group_0"];
    group["targets"] = {module};
    block["config_groups"]["group_3"] = group;
  });
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(has_finding(result.output, "config.multiply_covered", module + ".weight_packed"))
      << result.output;
}

TEST_F(MixedInspectValidate, DenseLinearTargetedByNameAndIgnored) {
  const std::string router = "model.layers.1.mlp.gate";
  auto result = validate_edited("seed000", [&](nlohmann::json& block) {
    block["config_groups"]["group_0"]["targets"].push_back(router);
  });
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(has_finding(result.output, "config.multiply_covered", router + ".weight"))
      << result.output;
}

TEST_F(MixedInspectValidate, GateAndUpSplitAcrossGroups) {
  const std::string prefix = "model.layers.2.mlp.shared_experts.";
  auto result = validate_edited("seed000", [&](nlohmann::json& block) {
    auto group = block["config_groups"]["group_2"];
    group["targets"] = {prefix + "gate_proj"};
    block["config_groups"]["group_3"] = group;
  });
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(has_finding(result.output, "config.fused_split", prefix + "gate_up_proj"))
      << result.output;
  // The split explains compressed-tensors and vLLM disagreeing on gate_proj: said once.
  EXPECT_EQ(count_of(result.output, "config.multiply_covered"), 0u) << result.output;
}

TEST_F(MixedInspectValidate, Nvfp4ModuleIgnoredOrInAnIntegerGroup) {
  const std::string expert = "model.layers.2.mlp.experts.3.up_proj";
  auto ignored = validate_edited("nvfp4-compressed-tensors",
                                 [&](nlohmann::json& block) { block["ignore"].push_back(expert); });
  EXPECT_EQ(ignored.exit_code, 1) << ignored.output;
  EXPECT_TRUE(has_finding(ignored.output, "config.scheme_mismatch", expert + ".weight_packed"))
      << ignored.output;
  // Expert 3 ignored while expert 0 (the one vLLM consults) is not: one FusedMoE, two states.
  EXPECT_TRUE(has_finding(ignored.output, "config.fused_split", "model.layers.2.mlp.experts"))
      << ignored.output;

  auto integer = validate_edited("nvfp4-compressed-tensors", [](nlohmann::json& block) {
    block["config_groups"]["group_0"]["format"] = "pack-quantized";
    block["config_groups"]["group_0"]["weights"]["type"] = "int";
  });
  EXPECT_EQ(integer.exit_code, 1) << integer.output;
  EXPECT_TRUE(has_finding(integer.output, "config.scheme_mismatch", expert + ".weight_packed"))
      << integer.output;
}

TEST_F(MixedInspectValidate, ModeloptExcludeModules) {
  const std::string expert = "model.layers.2.mlp.experts.3.up_proj";
  auto excluded = validate_edited(
      "nvfp4-modelopt", [&](nlohmann::json& block) { block["exclude_modules"].push_back(expert); });
  EXPECT_EQ(excluded.exit_code, 1) << excluded.output;
  EXPECT_TRUE(has_finding(excluded.output, "config.scheme_mismatch", expert + ".weight"))
      << excluded.output;

  // Both files carry the list; edited alike, the problem is reported once.
  auto kept = validate_edited(
      "nvfp4-modelopt",
      [](nlohmann::json& block) {
        remove_entry(block["exclude_modules"], "lm_head");
        if (block.contains("ignore")) remove_entry(block["ignore"], "lm_head");
      },
      true);
  EXPECT_EQ(kept.exit_code, 1) << kept.output;
  EXPECT_TRUE(has_finding(kept.output, "config.scheme_mismatch", "lm_head.weight")) << kept.output;
  EXPECT_EQ(count_of(kept.output, "config.scheme_mismatch"), 1u) << kept.output;
}

TEST_F(MixedInspectValidate, InspectShowsTheConfigGroups) {
  auto text = run_cli("inspect " + quoted(output("seed000")));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("config groups:"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("int8 sym group 128"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("ignored (BF16)"), std::string::npos) << text.output;

  auto json = run_cli("inspect " + quoted(output("seed000")) + " --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const auto groups = nlohmann::json::parse(json.standard_output)["quantization"]["config_groups"];
  ASSERT_EQ(groups.size(), 4u) << groups.dump(2);
  std::map<std::string, nlohmann::json> by_scheme;
  for (const auto& row : groups) by_scheme[row["scheme"].get<std::string>()] = row;
  // Routed experts of layers 1-3 (3 × 16 × 3) INT4 with zero points: 4 tensors each.
  const auto& int4 = by_scheme.at("int4 asym group 128");
  EXPECT_EQ(int4["format"], "pack-quantized");
  EXPECT_EQ(int4["modules"], 144);
  EXPECT_EQ(int4["tensors"], 576);
  // The MTP layer's 16 × 3 experts, 3 shared-expert projections and 5 attention Linears.
  EXPECT_EQ(by_scheme.at("int8 sym channel")["modules"], 56);
  EXPECT_EQ(by_scheme.at("unquantized")["name"], "ignored (BF16)");
  std::uint64_t bytes = 0;
  for (const auto& row : groups) bytes += row["bytes"].get<std::uint64_t>();
  EXPECT_GT(bytes, 0u);

  auto nvfp4 = run_cli("inspect " + quoted(output("nvfp4-modelopt")) + " --json");
  ASSERT_EQ(nvfp4.exit_code, 0) << nvfp4.output;
  const auto rows = nlohmann::json::parse(nvfp4.standard_output)["quantization"]["config_groups"];
  ASSERT_EQ(rows.size(), 2u) << rows.dump(2);
  EXPECT_EQ(rows[0]["scheme"], "nvfp4 (float 4-bit, group 16)");
  EXPECT_EQ(rows[0]["format"], "modelopt");
  EXPECT_EQ(rows[0]["modules"], 96);
  EXPECT_EQ(rows[0]["tensors"], 288);  // weight, weight_scale, weight_scale_2
}

TEST_F(MixedInspectValidate, DenseCheckpointHasNoGroupTable) {
  auto json = run_cli("inspect " + quoted(kModel) + " --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  EXPECT_TRUE(nlohmann::json::parse(json.standard_output)["quantization"]["config_groups"].empty());
}

}  // namespace
}  // namespace qs
