// What `eval`, `generate` and `calibrate` read is checked before it is read: quantized modules
// whose companion tensors do not fit (wrong size, zero elements, wrong rank) are one-line
// errors naming the tensor with exit 2, never a read past a buffer; token ids outside the
// vocabulary are refused whatever their dtype; eval refuses rows with no next token.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/safetensors.h"
#include "quantized_outputs.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::EditableTensor;
using testing::QuantizedOutputs;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using Edit = testing::TensorEdit;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kModule = "model.layers.1.mlp.experts.3.up_proj";  // [128, 256]

class RunInputs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    outputs_ = std::make_unique<QuantizedOutputs>("run-inputs");
    outputs_->quantize_schemes({"int4", "nvfp4"});
  }
  static void TearDownTestSuite() { outputs_.reset(); }

  // eval and generate both refuse `model` with exit 2, saying `why` and naming `tensor`.
  static void expect_refused(const std::filesystem::path& model, const std::string& why,
                             const std::string& tensor) {
    for (const std::string& command :
         {"eval --ref " + quoted(kModel) + " --model " + quoted(model) + " --tokens " +
              quoted(kModel / "tokens.safetensors") + " --max-rows 1 --decode-steps 0",
          "generate " + quoted(model) + " --prompt x --max-new 1"}) {
      auto result = run_cli(command);
      EXPECT_EQ(result.exit_code, 2) << command << "\n" << result.output;
      EXPECT_NE(result.output.find(why), std::string::npos) << command << "\n" << result.output;
      EXPECT_NE(result.output.find("'" + tensor + "'"), std::string::npos) << command << "\n"
                                                                           << result.output;
      EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
    }
  }

  static std::filesystem::path token_file(const std::string& name, DType dtype,
                                          std::span<const std::byte> bytes, Shape shape) {
    const auto path = outputs_->directory() / name;
    SafetensorsWriter writer(path, {{"ids", dtype, shape}});
    writer.write(bytes);
    writer.commit();
    return path;
  }

  static inline std::unique_ptr<QuantizedOutputs> outputs_;
};

TEST_F(RunInputs, BlockScalesOfTheWrongSize) {
  const auto nvfp4 = outputs_->broken_copy("nvfp4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight_scale") {
      tensor.spec.shape[0] /= 2;
      tensor.bytes.resize(tensor.bytes.size() / 2);
    }
    return true;
  });
  expect_refused(nvfp4, "must be [128, 16]", kModule + ".weight_scale");

  const auto int4 = outputs_->broken_copy("int4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight_scale") {
      tensor.spec.shape[1] = 1;  // one scale per row, but 256 does not pair with the zero points
      tensor.bytes.resize(tensor.spec.shape[0] * 2);
    }
    return true;
  });
  expect_refused(int4, "must be [16, 1]", kModule + ".weight_zero_point");
}

TEST_F(RunInputs, EmptyGlobalScale) {
  const auto broken = outputs_->broken_copy("nvfp4", testing::emptied(kModule + ".weight_scale_2"));
  expect_refused(broken, "is one F32 value", kModule + ".weight_scale_2");
}

TEST_F(RunInputs, OneDimensionalCodes) {
  const auto broken = outputs_->broken_copy("nvfp4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight") tensor.spec.shape = {tensor.bytes.size()};
    return true;
  });
  expect_refused(broken, "no logical weight shape", kModule + ".weight");
}

TEST_F(RunInputs, WeightShapeOfFourBytes) {
  const auto broken = outputs_->broken_copy("int4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight_shape") {
      tensor.spec.dtype = DType::I32;  // [2] of I32: 8 bytes, where I64 [2] needs 16
      const std::int32_t dims[2] = {128, 256};
      tensor.bytes.resize(8);
      std::memcpy(tensor.bytes.data(), dims, 8);
    }
    return true;
  });
  expect_refused(broken, "no logical weight shape", kModule + ".weight_packed");
}

TEST_F(RunInputs, TokenIdsOutsideTheVocabularyWhateverTheirDtype) {
  const std::vector<std::int64_t> wide = {1, (std::int64_t{1} << 32) + 65, 3, 4};
  const std::vector<std::int64_t> negative = {1, -2, 3, 4};
  const std::vector<std::int32_t> too_large = {1, 2, 1 << 30, 4};
  const auto wide_file =
      token_file("wide.safetensors", DType::I64, std::as_bytes(std::span(wide)), {1, 4});
  const auto negative_file =
      token_file("negative.safetensors", DType::I64, std::as_bytes(std::span(negative)), {1, 4});
  const auto large_file =
      token_file("large.safetensors", DType::I32, std::as_bytes(std::span(too_large)), {1, 4});
  for (const auto& [file, kind] : std::vector<std::pair<std::filesystem::path, std::string>>{
           {wide_file, "token id 4294967361 at position 1"},
           {negative_file, "token id -2 at position 1"},
           {large_file, "outside the vocabulary"}}) {
    for (const std::string& command :
         {"eval --ref " + quoted(kModel) + " --model " + quoted(kModel) + " --tokens " +
              quoted(file),
          "generate " + quoted(kModel) + " --tokens " + quoted(file) + " --max-new 1",
          "calibrate " + quoted(kModel) + " --tokens " + quoted(file) + ":ids --out " +
              quoted(outputs_->directory() / "stats.qsc")}) {
      auto result = run_cli(command);
      EXPECT_EQ(result.exit_code, 2) << command << "\n" << result.output;
      EXPECT_NE(result.output.find(kind), std::string::npos) << command << "\n" << result.output;
    }
  }
}

TEST_F(RunInputs, EvalRefusesRowsOfOneToken) {
  const std::vector<std::int32_t> ids = {1, 2, 3};
  const auto file =
      token_file("single.safetensors", DType::I32, std::as_bytes(std::span(ids)), {3, 1});
  auto result = run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(kModel) +
                        " --tokens " + quoted(file));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("at least 2 per row"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("PPL"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace qs

namespace qs {
namespace {

// Every scheme the recipe grammar lets `quantize` write, `eval` must read: NVFP4 in both
// layouts and pack-quantized integers of every width 2..8 (3, 5, 6 and 7 bits leave unused
// bits in each int32 word), symmetric per group and asymmetric per channel, by round-to-nearest
// and (for the widths that leave unused bits) GPTQ, whose codes come from its own sweep. Each
// output also validates clean, and its mean KLD against the source is finite.
TEST(RoundTrip, EveryWrittenSchemeEvaluates) {
  ScratchDirectory scratch("round-trip");
  struct Scheme {
    std::string name;
    std::string format;
    std::string rule;  // the routed-expert rule's action and arguments
    bool calibrated = false;
  };
  std::vector<Scheme> schemes = {
      {"nvfp4-modelopt", "modelopt", "action: nvfp4"},
      {"nvfp4-compressed-tensors", "compressed-tensors", "action: nvfp4"},
  };
  for (int bits = 2; bits <= 8; ++bits) {
    schemes.push_back({fmt::format("int{}-sym-g32", bits), "compressed-tensors",
                       fmt::format("action: int\n    bits: {}\n    symmetric: true\n"
                                   "    group_size: 32",
                                   bits)});
    schemes.push_back({fmt::format("int{}-asym-channel", bits), "compressed-tensors",
                       fmt::format("action: int\n    bits: {}\n    symmetric: false\n"
                                   "    group_size: channel",
                                   bits)});
  }
  for (int bits : {3, 5, 6, 7})
    schemes.push_back({fmt::format("gptq{}-asym-g32", bits), "compressed-tensors",
                       fmt::format("action: gptq\n    bits: {}\n    symmetric: false\n"
                                   "    group_size: 32",
                                   bits),
                       true});
  const auto statistics = scratch.path() / "stats.qsc";
  auto calibrated =
      run_cli("calibrate " + quoted(kModel) + " --tokens " + quoted(kModel / "tokens.safetensors") +
              " --max-rows 2 --all-experts --out " + quoted(statistics));
  ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
  for (const auto& scheme : schemes) {
    const auto recipe = scratch.path() / (scheme.name + ".yaml");
    write_file_atomically(recipe, fmt::format("format: {}\nrules:\n  - name: experts\n"
                                              "    category: routed_expert\n    {}\n",
                                              scheme.format, scheme.rule));
    const auto out = scratch.path() / scheme.name;
    auto quantized =
        run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " + quoted(recipe) +
                (scheme.calibrated ? " --calib " + quoted(statistics) : std::string()));
    ASSERT_EQ(quantized.exit_code, 0) << scheme.name << "\n" << quantized.output;
    auto valid = run_cli("validate " + quoted(out));
    EXPECT_EQ(valid.exit_code, 0) << scheme.name << "\n" << valid.output;
    auto eval =
        run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(out) + " --tokens " +
                quoted(kModel / "tokens.safetensors") + " --max-rows 1 --decode-steps 0 --json");
    ASSERT_EQ(eval.exit_code, 0) << scheme.name << "\n" << eval.output;
    const auto report = nlohmann::json::parse(eval.standard_output);
    const double kld = report["kld"]["mean"].get<double>();
    EXPECT_TRUE(std::isfinite(kld) && kld >= 0.0) << scheme.name << " KLD " << kld;
  }
}

}  // namespace
}  // namespace qs
