// `quantsmith mtp extract|inject` as users run them: the MTP layer as a standalone draft
// (bytes unchanged from BF16, dequantized bit-exactly from NVFP4 and pack-quantized sources,
// requantized to INT4 group 32 as seed 003), put back into a quantized checkpoint (seed 002),
// and the refusals.

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/int_quantizer.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kMtpAttention = "model.layers.4.self_attn.q_b_proj";  // [H·d, 128]
const std::string kMtpExpert = "model.layers.4.mlp.experts.7.down_proj";

std::vector<std::byte> bytes_of(const Checkpoint& checkpoint, const std::string& name) {
  const auto location = checkpoint.at(name);
  return location.shard->read(*location.info);
}

std::vector<std::byte> to_bf16(const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * 2);
  encode_from_f32(DType::BF16, values, bytes);
  return bytes;
}

// The reference decoding of an NVFP4 module, as BF16 bytes.
std::vector<std::byte> nvfp4_reference(const Checkpoint& checkpoint, const std::string& module,
                                       bool modelopt) {
  const auto codes = bytes_of(checkpoint, module + (modelopt ? ".weight" : ".weight_packed"));
  const auto scales = bytes_of(checkpoint, module + ".weight_scale");
  const auto global =
      bytes_of(checkpoint, module + (modelopt ? ".weight_scale_2" : ".weight_global_scale"));
  float stored = 0;
  std::memcpy(&stored, global.data(), 4);
  const auto shape = checkpoint.at(module + ".weight_scale").info->shape;
  const std::uint64_t rows = shape[0], cols = shape[1] * 16;
  std::vector<float> values(rows * cols);
  fp4::dequantize({reinterpret_cast<const std::uint8_t*>(codes.data()), codes.size()},
                  {reinterpret_cast<const std::uint8_t*>(scales.data()), scales.size()},
                  modelopt ? stored : 1.0f / stored, rows, cols, values);
  return to_bf16(values);
}

class Mtp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<ScratchDirectory>("mtp");
    for (const char* format : {"modelopt", "compressed-tensors"})
      quantize(scratch_->path() / (std::string("nvfp4-") + format),
               "--recipe " + quoted(shipped_recipe("glm5-nvfp4-all-with-mtp.yaml")) + " --format " +
                   format);
    // Seed 000's W8A16 side: the MTP block INT8 channel-wise.
    quantize(scratch_->path() / "w8a16",
             "--recipe " + quoted(shipped_recipe("glm5-w8a16-int8mix-seed000.yaml")));
  }
  static void TearDownTestSuite() { scratch_.reset(); }
  static void quantize(const std::filesystem::path& out, const std::string& arguments) {
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " " + arguments);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  static std::filesystem::path path(const std::string& name) { return scratch_->path() / name; }
  std::filesystem::path fresh(const std::string& name) {
    return path(name + "-" + std::to_string(++outputs_));
  }
  static void expect_valid(const std::filesystem::path& directory, const std::string& extra = "") {
    auto result = run_cli("validate " + quoted(directory) + extra);
    EXPECT_EQ(result.exit_code, 0) << result.output;
  }

  static inline std::unique_ptr<ScratchDirectory> scratch_;
  static inline int outputs_ = 0;
};

TEST_F(Mtp, ExtractFromBf16KeepsTheLayerBytesAndNames) {
  const auto out = fresh("draft");
  auto result = run_cli("mtp extract " + quoted(kModel) + " " + quoted(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto draft = Checkpoint::open(out);
  auto source = Checkpoint::open(kModel);
  std::size_t layer_tensors = 0;
  for (const auto& location : source.tensors())
    if (location.info->name.starts_with("model.layers.4.")) {
      ++layer_tensors;
      EXPECT_EQ(bytes_of(draft, location.info->name), bytes_of(source, location.info->name));
    }
  EXPECT_EQ(draft.tensors().size(), layer_tensors);
  const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
  EXPECT_EQ(config["num_hidden_layers"], 4);
  EXPECT_EQ(config["num_nextn_predict_layers"], 1);
  EXPECT_FALSE(config.contains("quantization_config"));
  expect_valid(out);
}

TEST_F(Mtp, ExtractDequantizesNvfp4BitExactlyInBothLayouts) {
  for (const bool modelopt : {true, false}) {
    const auto source_path = path(modelopt ? "nvfp4-modelopt" : "nvfp4-compressed-tensors");
    const auto out = fresh("nvfp4-draft");
    auto result = run_cli("mtp extract " + quoted(source_path) + " " + quoted(out));
    ASSERT_EQ(result.exit_code, 0) << result.output;
    auto source = Checkpoint::open(source_path);
    auto draft = Checkpoint::open(out);
    for (const auto& module : {kMtpAttention, kMtpExpert}) {
      EXPECT_EQ(draft.at(module + ".weight").info->dtype, DType::BF16);
      EXPECT_EQ(bytes_of(draft, module + ".weight"), nvfp4_reference(source, module, modelopt))
          << module;
    }
    EXPECT_FALSE(draft.find(kMtpExpert + ".weight_scale").has_value());
    expect_valid(out);
  }
}

TEST_F(Mtp, ExtractDequantizesPackQuantizedBitExactly) {
  const auto out = fresh("int8-draft");
  auto result = run_cli("mtp extract " + quoted(path("w8a16")) + " " + quoted(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto source = Checkpoint::open(path("w8a16"));
  auto draft = Checkpoint::open(out);
  const auto scales = source.at(kMtpExpert + ".weight_scale");
  const auto shape = draft.at(kMtpExpert + ".weight").info->shape;
  const auto quantized =
      intq::unpack(bytes_of(source, kMtpExpert + ".weight_packed"),
                   bytes_of(source, kMtpExpert + ".weight_scale"), scales.info->dtype, {}, shape[0],
                   shape[1], scales.info->shape[1], 8);
  std::vector<float> values(shape[0] * shape[1]);
  intq::dequantize(quantized, values);
  EXPECT_EQ(bytes_of(draft, kMtpExpert + ".weight"), to_bf16(values));
}

TEST_F(Mtp, RequantizesTheDraftToInt4Group32AsSeed003) {
  const auto out = fresh("int4-draft");
  auto result = run_cli("mtp extract " + quoted(path("nvfp4-modelopt")) + " " + quoted(out) +
                        " --requant int4-g32");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-staging"));
  auto draft = Checkpoint::open(out);
  EXPECT_EQ(draft.at(kMtpExpert + ".weight_packed").info->dtype, DType::I32);
  EXPECT_EQ(draft.at(kMtpExpert + ".weight_scale").info->shape[1], 128u / 32);
  EXPECT_TRUE(draft.find(kMtpExpert + ".weight_zero_point").has_value());
  EXPECT_EQ(draft.at("model.layers.4.eh_proj.weight").info->dtype, DType::BF16);
  const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
  const auto& weights = config["quantization_config"]["config_groups"]["group_0"]["weights"];
  EXPECT_EQ(weights["group_size"], 32);
  EXPECT_EQ(weights["symmetric"], false);
  expect_valid(out);

  // Injected into the BF16 model, the requantized draft runs: MTP acceptance is measured.
  const auto target = fresh("bf16-with-int4-draft");
  result = run_cli("mtp inject " + quoted(kModel) + " " + quoted(out) + " " + quoted(target));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto eval =
      run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(target) + " --tokens " +
              quoted(kModel / "tokens.safetensors") + " --max-rows 2 --decode-steps 0 --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const auto report = nlohmann::json::parse(eval.standard_output);
  EXPECT_GT(report["mtp_acceptance"]["model"].get<double>(), 0.5) << eval.output;
}

TEST_F(Mtp, InjectPutsTheBf16LayerBackAndIgnoresIt) {
  const auto out = fresh("seed002");
  auto result =
      run_cli("mtp inject " + quoted(path("w8a16")) + " " + quoted(kModel) + " " + quoted(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto injected = Checkpoint::open(out);
  auto source = Checkpoint::open(kModel);
  EXPECT_EQ(bytes_of(injected, kMtpExpert + ".weight"), bytes_of(source, kMtpExpert + ".weight"));
  EXPECT_FALSE(injected.find(kMtpExpert + ".weight_packed").has_value());
  const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
  const auto ignore = config["quantization_config"]["ignore"].dump();
  EXPECT_NE(ignore.find("model.layers.4."), std::string::npos) << ignore;
  expect_valid(out, " --ref " + quoted(kModel));
}

TEST_F(Mtp, RefusesWhatCannotWork) {
  // A model without an MTP layer.
  const auto no_mtp = fresh("no-mtp");
  std::filesystem::create_directories(no_mtp);
  testing::copy_bundled_model(no_mtp);
  auto config = nlohmann::json::parse(read_text_file(no_mtp / "config.json"));
  config["num_nextn_predict_layers"] = 0;
  write_file_atomically(no_mtp / "config.json", config.dump(2));
  auto result = run_cli("mtp extract " + quoted(no_mtp) + " " + quoted(fresh("out")));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  // Its tensors still hold layer 4, which this config does not describe: the source's layout
  // check refuses it before planning.
  EXPECT_NE(result.output.find("not part of the architecture"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("model.layers.4."), std::string::npos) << result.output;

  const auto draft_only = fresh("draft-only");
  ASSERT_EQ(run_cli("mtp extract " + quoted(kModel) + " " + quoted(draft_only)).exit_code, 0);
  const auto layers_only = fresh("no-mtp-tensors");
  testing::rewrite_checkpoint(kModel, layers_only, [](testing::EditableTensor& tensor) {
    return tensor.spec.name.find("layers.4.") == std::string::npos;
  });
  result = run_cli("mtp inject " + quoted(kModel) + " " + quoted(layers_only) + " " +
                   quoted(fresh("out")));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("no MTP layer tensors"), std::string::npos) << result.output;

  for (const char* arguments : {" --requant gptq-int4", " --requant int3",
                                " --requant int4 "
                                "--recipe x.yaml"}) {
    const auto out = fresh("refused");
    result = run_cli("mtp extract " + quoted(kModel) + " " + quoted(out) + arguments);
    EXPECT_EQ(result.exit_code, 2) << arguments << "\n" << result.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << arguments;
  }
  // Output into the input.
  result = run_cli("mtp extract " + quoted(draft_only) + " " + quoted(draft_only));
  EXPECT_EQ(result.exit_code, 2) << result.output;
}

}  // namespace
}  // namespace qs
