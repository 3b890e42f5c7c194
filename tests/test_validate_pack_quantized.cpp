// `validate` on compressed-tensors pack-quantized checkpoints: our own INT4 / INT8 output
// validates clean (also against its BF16 source, each integer weight dequantized), and each
// way of breaking one, in the tensors or in the config, gives its own finding and exit 1.

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/safetensors.h"
#include "qs/quant/int_quantizer.h"
#include "qs/quant/nvfp4_validation.h"
#include "quantized_outputs.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::has_finding;
using testing::kUnchanged;
using testing::QuantizedOutputs;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kModule = "model.layers.1.mlp.experts.3.up_proj";  // [128, 256]

using testing::EditableTensor;
using Edit = testing::TensorEdit;

class ValidatePackQuantized : public ::testing::Test {
 protected:
  // Quantized once for the suite: int4 is asymmetric g128 (zero points), int8-channel
  // symmetric with one scale per row.
  static void SetUpTestSuite() {
    outputs_ = std::make_unique<QuantizedOutputs>("validate-int");
    outputs_->quantize_schemes({"int4", "int8-channel"});
  }
  static void TearDownTestSuite() { outputs_.reset(); }
  static std::filesystem::path output(const char* scheme) { return outputs_->path(scheme); }

  // Breaks a copy of the `scheme` output with `edit` (and `edit_config` on its
  // quantization_config), validates it against the source, expects exit 1 and `kind` naming
  // `tensor`.
  void expect_finding(const char* scheme, const Edit& edit, const std::string& kind,
                      const std::string& tensor,
                      const std::function<void(nlohmann::json&)>& edit_config = {}) {
    std::function<void(nlohmann::json&)> edit_quantization_config;
    if (edit_config)
      edit_quantization_config = [&](nlohmann::json& config) {
        edit_config(config["quantization_config"]);
      };
    const auto broken = outputs_->broken_copy(scheme, edit, edit_quantization_config);
    auto result = run_cli("validate " + quoted(broken) + " --ref " + quoted(kModel));
    EXPECT_EQ(result.exit_code, 1) << kind << "\n" << result.output;
    EXPECT_TRUE(has_finding(result.output, kind, tensor)) << kind << " on " << tensor << "\n"
                                                          << result.output;
  }

  static inline std::unique_ptr<QuantizedOutputs> outputs_;
};

TEST_F(ValidatePackQuantized, OwnInt4AndInt8ChannelOutputIsValidAndCloseToTheSource) {
  struct Expected {
    const char* scheme;
    const char* format;
    double max_error;  // the bundled model: int4 g128 ~0.10, int8 channel ~0.008
  };
  for (const auto& expected :
       {Expected{"int4", "int4", 0.12}, Expected{"int8-channel", "int8", 0.01}}) {
    auto text = run_cli("validate " + quoted(output(expected.scheme)) + " --ref " + quoted(kModel));
    EXPECT_EQ(text.exit_code, 0) << text.output;
    EXPECT_NE(text.output.find("checks: headers, index, config, layout, int, reference"),
              std::string::npos)
        << text.output;
    EXPECT_NE(text.output.find(std::string(expected.format) + ": 176 integer weights"),
              std::string::npos)
        << text.output;

    auto json = run_cli("validate " + quoted(output(expected.scheme)) + " --ref " + quoted(kModel) +
                        " --json");
    ASSERT_EQ(json.exit_code, 0) << json.output;
    const auto report = nlohmann::json::parse(json.standard_output);
    // Channel-wise INT8 routed experts: only the engine-quirk warning (vLLM on Hopper needs
    // --moe-backend marlin for them), which leaves the checkpoint valid.
    for (const auto& finding : report["findings"]) {
      EXPECT_EQ(expected.scheme, std::string("int8-channel")) << finding.dump(2);
      EXPECT_EQ(finding["kind"], "engine.vllm_wna16_moe_channel_hopper") << finding.dump(2);
      EXPECT_EQ(finding["severity"], "warning") << finding.dump(2);
    }
    ASSERT_EQ(report["reference_comparisons"].size(), 176u);
    for (const auto& row : report["reference_comparisons"]) {
      EXPECT_EQ(row["format"], expected.format) << row.dump();
      EXPECT_GT(row["relative_error"].get<double>(), 0.0) << row.dump();
      EXPECT_LT(row["relative_error"].get<double>(), expected.max_error) << row.dump();
    }
  }
}

TEST_F(ValidatePackQuantized, MissingWeightScale) {
  expect_finding(
      "int4", [](EditableTensor& tensor) { return tensor.spec.name != kModule + ".weight_scale"; },
      "int.missing_tensor", kModule + ".weight_scale");
}

TEST_F(ValidatePackQuantized, ZeroPointsRemovedFromAsymmetricModule) {
  expect_finding(
      "int4",
      [](EditableTensor& tensor) { return tensor.spec.name != kModule + ".weight_zero_point"; },
      "int.config_mismatch", kModule + ".weight_zero_point");
}

TEST_F(ValidatePackQuantized, ZeroPointsOnSymmetricGroup) {
  expect_finding("int4", kUnchanged, "int.config_mismatch", kModule + ".weight_zero_point",
                 [](nlohmann::json& config) {
                   config["config_groups"]["group_0"]["weights"]["symmetric"] = true;
                 });
}

TEST_F(ValidatePackQuantized, NanAndZeroScales) {
  for (const char* scheme : {"int4", "int8-channel"}) {
    expect_finding(
        scheme,
        [](EditableTensor& tensor) {
          if (tensor.spec.name == kModule + ".weight_scale") {
            EXPECT_EQ(tensor.spec.dtype, DType::BF16);
            tensor.bytes[2] = std::byte{0xC0};  // scale 1: 0x7FC0, a BF16 NaN
            tensor.bytes[3] = std::byte{0x7F};
          }
          return true;
        },
        "int.bad_scale", kModule + ".weight_scale");
  }
  expect_finding(
      "int4",
      [](EditableTensor& tensor) {
        if (tensor.spec.name == kModule + ".weight_scale")
          tensor.bytes[0] = tensor.bytes[1] = std::byte{0};  // scale 0
        return true;
      },
      "int.bad_scale", kModule + ".weight_scale");
}

TEST_F(ValidatePackQuantized, WeightShapeDisagreesWithPackedCodes) {
  for (int dim : {0, 1})
    expect_finding(
        "int4",
        [dim](EditableTensor& tensor) {
          if (tensor.spec.name == kModule + ".weight_shape") {
            std::int64_t shape[2];
            std::memcpy(shape, tensor.bytes.data(), sizeof(shape));
            shape[dim] *= 2;
            std::memcpy(tensor.bytes.data(), shape, sizeof(shape));
          }
          return true;
        },
        "int.shape_mismatch", kModule + ".weight_shape");
}

TEST_F(ValidatePackQuantized, ConfigGroupSizeDisagreesWithScales) {
  expect_finding("int4", kUnchanged, "int.config_mismatch", kModule + ".weight_scale",
                 [](nlohmann::json& config) {
                   config["config_groups"]["group_0"]["weights"]["group_size"] = 64;
                 });
  // The config's num_bits decides how the codes are read: 8-bit codes need twice the words.
  expect_finding("int4", kUnchanged, "int.shape_mismatch", kModule + ".weight_shape",
                 [](nlohmann::json& config) {
                   config["config_groups"]["group_0"]["weights"]["num_bits"] = 8;
                 });
}

TEST_F(ValidatePackQuantized, ModulesTheConfigDoesNotQuantize) {
  expect_finding("int8-channel", kUnchanged, "int.config_mismatch", kModule + ".weight_packed",
                 [](nlohmann::json& config) { config["ignore"].push_back(kModule); });
  expect_finding("int8-channel", kUnchanged, "int.config_mismatch", kModule + ".weight_packed",
                 [](nlohmann::json& config) {
                   config["config_groups"]["group_0"]["format"] = "nvfp4-pack-quantized";
                 });
}

// A [3, 12] INT4 channel-wise asymmetric matrix: 48 code bits in two words per row and 12 zero
// point bits in one word, so both streams end in padding the packer leaves zero.
class PackQuantizedPadding : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kRows = 3, kCols = 12;
  const std::string module_ = "model.layers.0.mlp.down_proj";

  void SetUp() override {
    std::vector<float> weight(kRows * kCols);
    for (std::size_t i = 0; i < weight.size(); ++i) weight[i] = 0.1f * static_cast<float>(i) - 1.3f;
    intq::IntQuantized quantized;
    intq::quantize({DType::F32, std::as_bytes(std::span(weight)), kRows, kCols},
                   {{4, false}, intq::kChannel}, quantized, intq::Backend::Reference);
    const auto shapes = intq::packed_shapes(kRows, kCols, 4);
    ASSERT_EQ(shapes.words_per_row, 2u);
    ASSERT_EQ(shapes.zero_point_rows, 1u);
    packed_.resize(kRows * shapes.words_per_row * 4);
    scales_.resize(kRows * 4);
    zeros_.resize(shapes.zero_point_rows * 4);
    intq::pack(quantized, 4, packed_, scales_, zeros_);
  }

  // Writes the module (and a config with one asymmetric channel-wise INT4 group) and returns
  // the int findings as "kind tensor".
  std::vector<std::string> findings() {
    ScratchDirectory scratch("validate-int-padding");
    const std::vector<TensorSpec> specs{{module_ + ".weight_packed", DType::I32, {kRows, 2}},
                                        {module_ + ".weight_scale", DType::F32, {kRows, 1}},
                                        {module_ + ".weight_shape", DType::I64, {2}},
                                        {module_ + ".weight_zero_point", DType::I32, {1, 1}}};
    const std::int64_t shape[2] = {kRows, kCols};
    SafetensorsWriter writer(scratch.path() / "model.safetensors", specs);
    writer.write_tensor(specs[0].name, packed_);
    writer.write_tensor(specs[1].name, scales_);
    writer.write_tensor(specs[2].name, std::as_bytes(std::span(shape)));
    writer.write_tensor(specs[3].name, zeros_);
    writer.commit();
    const nlohmann::json weights = {{"num_bits", 4},
                                    {"symmetric", false},
                                    {"strategy", "channel"},
                                    {"group_size", nullptr},
                                    {"type", "int"}};
    const nlohmann::json config = {
        {"quantization_config",
         {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}}, {"format", "pack-quantized"}, {"weights", weights}}}}},
          {"ignore", nlohmann::json::array()}}}};
    write_file_atomically(scratch.path() / "config.json", config.dump(2));
    auto checkpoint = Checkpoint::open(scratch.path());
    ValidationReport report;
    validate_nvfp4(checkpoint, {}, report);
    std::vector<std::string> out;
    for (const auto& finding : report.findings) out.push_back(finding.kind + " " + finding.tensor);
    return out;
  }

  std::vector<std::byte> packed_, scales_, zeros_;
};

TEST_F(PackQuantizedPadding, CleanStreamsAreValid) { EXPECT_TRUE(findings().empty()); }

TEST_F(PackQuantizedPadding, BitsPastTheLastFieldOfARow) {
  packed_[(1 * 2 + 1) * 4 + 3] |= std::byte{0x80};  // row 1, word 1, bit 31 (bits 16.. unused)
  EXPECT_EQ(findings(), std::vector<std::string>{"int.padding " + module_ + ".weight_packed"});
}

TEST_F(PackQuantizedPadding, BitsPastTheLastZeroPoint) {
  zeros_[2] |= std::byte{0x10};  // bit 20 of the one word (bits 12.. unused)
  EXPECT_EQ(findings(), std::vector<std::string>{"int.padding " + module_ + ".weight_zero_point"});
}

}  // namespace
}  // namespace qs
