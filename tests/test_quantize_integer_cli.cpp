// Integer schemes through `quantsmith quantize` as users run them: the --scheme presets write
// compressed-tensors pack-quantized tensors and configs, the seed recipes run, GPTQ from
// `quantsmith calibrate` statistics beats round-to-nearest, and bad statistics or recipes are
// refused before anything is written.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gptq_quality_report.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kExpert = "model.layers.1.mlp.experts.3.gate_proj";

nlohmann::json quantization_config(const std::filesystem::path& out) {
  return nlohmann::json::parse(read_text_file(out / "config.json"))["quantization_config"];
}

TEST(QuantizeIntegerCli, SchemesWritePackQuantizedTensorsAndConfigs) {
  ScratchDirectory scratch("quantize-int");
  struct Expected {
    const char* scheme;
    int bits;
    bool symmetric;
    int groups;  // of the 256-wide expert gate_proj
  };
  for (const auto& expected : {Expected{"int8", 8, true, 2}, Expected{"int8-channel", 8, true, 1},
                               Expected{"int4", 4, false, 2}, Expected{"int4-g32", 4, false, 8}}) {
    const auto out = scratch.path() / expected.scheme;
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " --scheme " +
                          expected.scheme);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto config = quantization_config(out);
    EXPECT_EQ(config["format"], "pack-quantized");
    const auto& weights = config["config_groups"]["group_0"]["weights"];
    EXPECT_EQ(weights["num_bits"], expected.bits);
    EXPECT_EQ(weights["symmetric"], expected.symmetric);
    EXPECT_EQ(weights["strategy"], expected.groups == 1 ? "channel" : "group");
    auto checkpoint = Checkpoint::open(out);
    const auto packed = checkpoint.at(kExpert + ".weight_packed");
    EXPECT_EQ(packed.info->dtype, DType::I32);
    EXPECT_EQ(packed.info->shape, (std::vector<std::uint64_t>{128, 256u * expected.bits / 32}));
    const auto scale = checkpoint.at(kExpert + ".weight_scale");
    EXPECT_EQ(scale.info->dtype, DType::BF16);
    EXPECT_EQ(scale.info->shape, (std::vector<std::uint64_t>{128, std::uint64_t(expected.groups)}));
    EXPECT_EQ(checkpoint.at(kExpert + ".weight_shape").info->dtype, DType::I64);
    EXPECT_EQ(checkpoint.find(kExpert + ".weight_zero_point").has_value(), !expected.symmetric);
    EXPECT_FALSE(checkpoint.find(kExpert + ".weight").has_value());
  }
  // validate dequantizes every integer weight against the source.
  auto validate = run_cli("validate " + quoted(scratch.path() / "int4-g32") + " --ref " +
                          quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  EXPECT_NE(validate.output.find("176 quantized weights"), std::string::npos) << validate.output;
  // The runner reads what we wrote: INT8 is close to the source, INT4 further.
  auto eval = run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(scratch.path() / "int8") +
                      " --tokens " + quoted(kModel / "tokens.safetensors") +
                      " --max-rows 2 --decode-steps 0 --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_LT(nlohmann::json::parse(eval.standard_output)["kld"]["mean"].get<double>(), 1e-3) << eval.output;
}

TEST(QuantizeIntegerCli, SeedRecipesRun) {
  ScratchDirectory scratch("quantize-int-seeds");
  const auto seed000 = scratch.path() / "seed000";
  auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(seed000) + " --recipe " +
                        quoted(shipped_recipe("glm5-w8a16-int8mix-seed000.yaml")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto config = quantization_config(seed000);
  // INT8 g128 (attention, shared), INT4 experts, INT8 channel-wise MTP: three groups, one
  // format, every Linear resolved as stored (checked by the writer against vLLM's matching).
  EXPECT_EQ(config["config_groups"].size(), 3u);
  auto checkpoint = Checkpoint::open(seed000);
  EXPECT_EQ(checkpoint.at("model.layers.4.self_attn.q_a_proj.weight_scale").info->shape[1], 1u);
  EXPECT_TRUE(checkpoint.find("model.layers.0.self_attn.q_a_proj.weight").has_value());
  EXPECT_TRUE(checkpoint.find("model.layers.4.eh_proj.weight").has_value());
  auto validate = run_cli("validate " + quoted(seed000));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

TEST(QuantizeIntegerCli, GptqBeatsRoundToNearestAndNeedsStatistics) {
  ScratchDirectory scratch("quantize-gptq");
  const std::string recipe =
      " --recipe " + quoted(shipped_recipe("glm5-w4a16-experts-seed002.yaml"));
  auto refused = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "x") + recipe);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("--calib"), std::string::npos) << refused.output;
  EXPECT_FALSE(std::filesystem::exists(scratch.path() / "x" / "config.json"));

  const auto stats = scratch.path() / "stats.qs";
  auto calibrated = run_cli("calibrate " + quoted(kModel) + " --tokens " +
                            quoted(kModel / "tokens.safetensors") + ":calib --max-rows 16 " +
                            "--all-experts --out " + quoted(stats));
  ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
  const auto out = scratch.path() / "gptq";
  auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + recipe + " --calib " +
                        quoted(stats) + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto report = nlohmann::json::parse(result.standard_output);
  const auto losses = testing::checked_gptq_losses(report);
  EXPECT_EQ(losses.weights, 4 * 16 * 3 - 16 * 3);  // routed experts of layers 1-3 (MTP stays BF16)
  EXPECT_LT(losses.gptq, 0.5 * losses.rtn);
  const auto config = quantization_config(out);
  EXPECT_EQ(config["config_groups"]["group_0"]["weights"]["actorder"], "weight");
  const auto ignore = config["ignore"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "model.layers.4.self_attn.q_a_proj"),
            ignore.end());

  // report_rtn: false skips the baseline: same bytes, the GPTQ losses as before, the baseline
  // null in the report and "not computed" in the summary.
  const auto no_baseline = scratch.path() / "no-baseline.yaml";
  std::ofstream(no_baseline) << "format: compressed-tensors\nrules:\n"
                                "  - {name: mtp, mtp: true, action: keep}\n"
                                "  - {name: experts, category: routed_expert, action: gptq-int4,\n"
                                "     report_rtn: false}\n";
  const auto out2 = scratch.path() / "gptq-no-baseline";
  auto skipped = run_cli("quantize " + quoted(kModel) + " " + quoted(out2) + " --recipe " +
                         quoted(no_baseline) + " --calib " + quoted(stats));
  ASSERT_EQ(skipped.exit_code, 0) << skipped.output;
  EXPECT_NE(skipped.output.find("round-to-nearest not computed"), std::string::npos)
      << skipped.output;
  const auto first = Checkpoint::open(out), second = Checkpoint::open(out2);
  ASSERT_EQ(first.tensors().size(), second.tensors().size());
  for (const auto& tensor : first.tensors()) {
    const auto& other = second.at(tensor.info->name);
    EXPECT_EQ(tensor.shard->read(*tensor.info), other.shard->read(*other.info))
        << tensor.info->name;
  }
  auto skipped_json = run_cli("quantize " + quoted(kModel) + " " +
                              quoted(scratch.path() / "gptq-no-baseline-json") + " --recipe " +
                              quoted(no_baseline) + " --calib " + quoted(stats) + " --json");
  ASSERT_EQ(skipped_json.exit_code, 0) << skipped_json.output;
  const auto rows = nlohmann::json::parse(skipped_json.standard_output)["quality"];
  ASSERT_EQ(rows.size(), report["quality"].size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_TRUE(rows[i]["rtn_relative_loss"].is_null()) << rows[i].dump();
    EXPECT_EQ(rows[i]["gptq_relative_loss"], report["quality"][i]["gptq_relative_loss"]);
  }
}

TEST(QuantizeIntegerCli, RefusesStatisticsThatDoNotMatchTheModel) {
  ScratchDirectory scratch("quantize-gptq-bad");
  const auto write_store = [&](const std::string& name, const std::string& module,
                               std::uint64_t k) {
    const auto path = scratch.path() / name;
    CalibrationStoreWriter writer(path, {"elsewhere", 4, false, "test"});
    std::vector<double> identity(k * k, 0.0);
    for (std::uint64_t i = 0; i < k; ++i) identity[i * k + i] = 1.0;
    writer.add(module, k, 4, identity);
    writer.commit();
    return path;
  };
  // A module outside the routed experts without statistics.
  auto missing = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "a") +
                         " --scheme gptq-int4 --calib " +
                         quoted(write_store("partial.qs", "model.layers.1.self_attn.q_a_proj", 256)));
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("model.layers.0.self_attn.q_a_proj.weight': no calibration "
                                "statistics"),
            std::string::npos)
      << missing.output;
  // Statistics of another width (routed experts without any fall back to round-to-nearest).
  auto wrong = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "b") +
                       " --recipe " + quoted(shipped_recipe("glm5-w4a16-experts-seed002.yaml")) +
                       " --calib " + quoted(write_store("narrow.qs", kExpert, 64)));
  EXPECT_EQ(wrong.exit_code, 2) << wrong.output;
  EXPECT_NE(wrong.output.find(kExpert + ".weight': the statistics are for 64 in-features"),
            std::string::npos)
      << wrong.output;
  EXPECT_FALSE(std::filesystem::exists(scratch.path() / "b" / "config.json"));
}

TEST(QuantizeIntegerCli, RefusesRecipesTheFormatCannotHold) {
  ScratchDirectory scratch("quantize-int-recipes");
  const auto write_recipe = [&](const std::string& name, const std::string& text) {
    std::ofstream(scratch.path() / name) << text;
    return quoted(scratch.path() / name);
  };
  const auto odd_group = write_recipe("odd.yaml", R"(
format: compressed-tensors
rules:
  - category: routed_expert
    action: int4
    group_size: 48
)");
  auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "a") +
                        " --recipe " + odd_group);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("group size 48, but its in-features 256"), std::string::npos)
      << result.output;
  const auto modelopt = write_recipe("modelopt.yaml", "rules:\n  - action: int8\n");
  result = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "b") +
                   " --recipe " + modelopt);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("use format: compressed-tensors"), std::string::npos)
      << result.output;
  const auto bad_option = write_recipe("bad.yaml", "rules:\n  - action: nvfp4\n    bits: 4\n");
  result = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "c") +
                   " --recipe " + bad_option);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("only applies to integer"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace qs
