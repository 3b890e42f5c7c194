// `quantsmith mtp extract` beyond test_mtp.cpp: the dequantize transform against the format
// formulas on hand-picked codes (every pack-quantized width, both NVFP4 layouts), every
// quantized module of NVFP4 and INT4-asymmetric sources dequantized bit-exactly, the seed 003
// INT4 group-32 requantization as vLLM reads it (config, shapes, round trip, resume),
// --with-head, --dry-run, and the refusals that must come before any byte is written.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/mtp_extract_job.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/quant/dequantize_transform.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/int_quantizer.h"
#include "qs/quant/quantize_transforms.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();
constexpr const char* kMtpPrefix = "model.layers.4.";  // the bundled model: 4 layers + MTP

std::vector<std::byte> to_bf16(std::span<const float> values) {
  std::vector<std::byte> bytes(values.size() * 2);
  encode_from_f32(DType::BF16, values, bytes);
  return bytes;
}

std::vector<float> from_bf16(std::span<const std::byte> bytes) {
  std::vector<float> values(bytes.size() / 2);
  decode_to_f32(DType::BF16, bytes, values);
  return values;
}

// Runs one dequantize transform on in-memory tensors.
std::vector<std::byte> run_dequantize(const DequantizeRequest& request,
                                      const std::vector<std::vector<std::byte>>& tensors) {
  static const std::vector<std::string> names = {"t.weight_packed", "t.weight_scale",
                                                 "t.weight_shape", "t.weight_zero_point"};
  std::vector<TensorInfo> infos(tensors.size());
  std::vector<SourceTensor> sources;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    infos[i].name = names[i];
    infos[i].dtype =
        i == 1 && request.layout == WeightLayout::PackQuantized ? DType::BF16 : DType::U8;
    sources.push_back({&infos[i], tensors[i]});
  }
  std::vector<std::byte> output(request.rows * request.cols * 2);
  std::vector<std::span<std::byte>> outputs = {output};
  make_dequantize_transform(request)->run(sources, outputs);
  return output;
}

// ---- the transform, against the formulas of docs/formats/ (pack-quantized, NVFP4) ----

// Codes, zero points and power-of-two multiples of 0.375 as scales: every (q − z)·s is exact
// in f32, so ŵ has one right BF16 value (one rounding), whatever order a decoder works in.
TEST(MtpExtract, DequantizeTransformDecodesEveryPackQuantizedWidthByTheFormula) {
  for (const int bits : {2, 3, 4, 8}) {
    for (const bool symmetric : {true, false}) {
      const std::uint64_t rows = 3, cols = 16, groups = 2;  // 3 rows: a partial zero-point word
      intq::IntQuantized quantized(rows, cols, groups, DType::BF16);
      const int q_min = -(1 << (bits - 1)), q_max = (1 << (bits - 1)) - 1;
      for (std::uint64_t i = 0; i < quantized.codes.size(); ++i)
        quantized.codes[i] = static_cast<std::int8_t>(q_min + (i * 5 + 1) % (q_max - q_min + 1));
      for (std::uint64_t g = 0; g < rows * groups; ++g) {
        quantized.scales[g] = 0.375f * static_cast<float>(1 << g) / 8;
        quantized.zeros[g] = symmetric ? 0 : static_cast<std::int8_t>(q_min + (3 * g + 1) % 4);
      }
      const auto shapes = intq::packed_shapes(rows, cols, bits);
      std::vector<std::byte> packed(rows * shapes.words_per_row * 4), scales(rows * groups * 2),
          zeros(symmetric ? 0 : shapes.zero_point_rows * groups * 4);
      intq::pack(quantized, bits, packed, scales, zeros);

      DequantizeRequest request;
      request.layout = WeightLayout::PackQuantized;
      request.rows = rows;
      request.cols = cols;
      request.bits = bits;
      request.groups = groups;
      std::vector<std::vector<std::byte>> tensors = {packed, scales, std::vector<std::byte>(8)};
      if (!symmetric) tensors.push_back(zeros);
      const auto output = run_dequantize(request, tensors);

      std::vector<float> expected(rows * cols);
      for (std::uint64_t r = 0; r < rows; ++r)
        for (std::uint64_t c = 0; c < cols; ++c) {
          const auto g = r * groups + c / (cols / groups);
          expected[r * cols + c] =
              static_cast<float>(quantized.codes[r * cols + c] - quantized.zeros[g]) *
              quantized.scales[g];
        }
      EXPECT_EQ(output, to_bf16(expected)) << bits << " bits, symmetric " << symmetric;
    }
  }
}

// E2M1 codes (sign in bit 3; 0, 0.5, 1, 1.5, 2, 3, 4, 6), E4M3 block scales including a
// subnormal one, and a power-of-two global scale: modelopt stores s2, compressed-tensors 1/s2.
TEST(MtpExtract, DequantizeTransformDecodesNvfp4InBothLayoutsByTheFormula) {
  const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const std::uint64_t rows = 2, cols = 32;
  const std::uint8_t scale_codes[4] = {0x38, 0x40, 0x01, 0x7e};  // 1, 2, 2^-9, 448
  const float scale_values[4] = {1.0f, 2.0f, std::ldexp(1.0f, -9), 448.0f};
  const float s2 = 0.5f;
  std::vector<std::byte> packed(rows * cols / 2), scales(4);
  std::vector<float> expected(rows * cols);
  for (std::uint64_t i = 0; i < rows * cols; ++i) {
    const std::uint8_t code = static_cast<std::uint8_t>((i * 7 + 3) % 16);
    packed[i / 2] |= static_cast<std::byte>(i % 2 == 0 ? code : code << 4);
    const float magnitude = e2m1[code & 7];
    expected[i] = ((code & 8) ? -magnitude : magnitude) * scale_values[i / 16] * s2;
  }
  std::memcpy(scales.data(), scale_codes, 4);
  for (const bool modelopt : {true, false}) {
    const float stored = modelopt ? s2 : 1.0f / s2;
    std::vector<std::byte> global(4);
    std::memcpy(global.data(), &stored, 4);
    DequantizeRequest request;
    request.layout = modelopt ? WeightLayout::Nvfp4Modelopt : WeightLayout::Nvfp4CompressedTensors;
    request.rows = rows;
    request.cols = cols;
    EXPECT_EQ(run_dequantize(request, {packed, scales, global}), to_bf16(expected))
        << (modelopt ? "modelopt" : "compressed-tensors");
  }
}

TEST(MtpExtract, DequantizeTransformRefusesBytesThatDoNotFitTheShape) {
  DequantizeRequest request;
  request.layout = WeightLayout::Nvfp4Modelopt;
  request.rows = 2;
  request.cols = 32;
  const std::vector<std::byte> global(4), scales(4), short_codes(31);
  const auto kind = testing::error_kind_of([&] {
    run_dequantize(request, {short_codes, scales, global});
  });
  EXPECT_EQ(kind, "dequantize.bad_input");
}

// ---- the CLI on the bundled model ----

std::vector<std::byte> bytes_of(const Checkpoint& checkpoint, const std::string& name) {
  const auto location = checkpoint.at(name);
  return location.shard->read(*location.info);
}

nlohmann::json config_of(const std::filesystem::path& directory) {
  return nlohmann::json::parse(read_text_file(directory / "config.json"));
}

// Quantized modules of the source's MTP layer: those with a weight_scale.
std::vector<std::string> quantized_mtp_modules(const Checkpoint& checkpoint) {
  std::vector<std::string> modules;
  for (const auto& location : checkpoint.tensors()) {
    const auto& name = location.info->name;
    const std::string suffix = ".weight_scale";
    if (name.starts_with(kMtpPrefix) && name.ends_with(suffix))
      modules.push_back(name.substr(0, name.size() - suffix.size()));
  }
  return modules;
}

std::vector<std::byte> nvfp4_reference(const Checkpoint& source, const std::string& module,
                                       bool modelopt) {
  const auto codes = bytes_of(source, module + (modelopt ? ".weight" : ".weight_packed"));
  const auto scales = bytes_of(source, module + ".weight_scale");
  const auto global =
      bytes_of(source, module + (modelopt ? ".weight_scale_2" : ".weight_global_scale"));
  float stored = 0;
  std::memcpy(&stored, global.data(), 4);
  const auto shape = source.at(module + ".weight_scale").info->shape;
  const std::uint64_t rows = shape[0], cols = shape[1] * 16;
  std::vector<float> values(rows * cols);
  fp4::dequantize({reinterpret_cast<const std::uint8_t*>(codes.data()), codes.size()},
                  {reinterpret_cast<const std::uint8_t*>(scales.data()), scales.size()},
                  modelopt ? stored : 1.0f / stored, rows, cols, values);
  return to_bf16(values);
}

std::vector<std::byte> int_reference(const Checkpoint& source, const std::string& module,
                                     int bits) {
  const auto scale = source.at(module + ".weight_scale");
  const auto shape_bytes = bytes_of(source, module + ".weight_shape");
  std::int64_t shape[2];  // compressed-tensors stores weight_shape as I64
  EXPECT_EQ(shape_bytes.size(), sizeof(shape));
  std::memcpy(shape, shape_bytes.data(), sizeof(shape));
  const auto zero_point = source.find(module + ".weight_zero_point");
  const auto zeros =
      zero_point ? bytes_of(source, module + ".weight_zero_point") : std::vector<std::byte>();
  const auto quantized = intq::unpack(bytes_of(source, module + ".weight_packed"),
                                      bytes_of(source, module + ".weight_scale"), scale.info->dtype,
                                      zeros, shape[0], shape[1], scale.info->shape[1], bits);
  std::vector<float> values(quantized.codes.size());
  intq::dequantize(quantized, values);
  return to_bf16(values);
}

class MtpExtractCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<ScratchDirectory>("mtp-extract");
    // glm5-nvfp4-seed001.yaml keeps the MTP layer BF16 (its rule "MTP layer stays BF16"), so it
    // would give nothing to dequantize; this recipe quantizes the MTP layer's Linears too.
    for (const char* format : {"modelopt", "compressed-tensors"})
      quantize(path(std::string("nvfp4-") + format),
               "--recipe " + quoted(shipped_recipe("glm5-nvfp4-all-with-mtp.yaml")) + " --format " +
                   format);
    // The MTP layer in INT4 asymmetric group 128 (with zero points), the rest BF16.
    write_file_atomically(path("int4-mtp.yaml"), R"(description: the MTP layer's Linears INT4
format: compressed-tensors
rules:
  - name: router, indexer, embeddings, lm_head and MTP projections stay BF16
    category: [lm_head, router, indexer, mtp_extra, embedding]
    action: keep
  - name: MTP layer INT4
    mtp: true
    action: int4
  - name: everything else stays BF16
    action: keep
)");
    quantize(path("int4"), "--recipe " + quoted(path("int4-mtp.yaml")));
  }
  static void TearDownTestSuite() { scratch_.reset(); }
  static void quantize(const std::filesystem::path& out, const std::string& arguments) {
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " " + arguments);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  static std::filesystem::path path(const std::string& name) { return scratch_->path() / name; }
  static std::filesystem::path fresh(const std::string& name) {
    return path(name + "-" + std::to_string(++outputs_));
  }
  static testing::CliResult extract(const std::filesystem::path& in,
                                    const std::filesystem::path& out,
                                    const std::string& extra = "") {
    return run_cli("mtp extract " + quoted(in) + " " + quoted(out) + extra);
  }
  static void expect_valid_and_inspectable(const std::filesystem::path& directory) {
    auto result = run_cli("validate " + quoted(directory));
    EXPECT_EQ(result.exit_code, 0) << result.output;
    result = run_cli("inspect " + quoted(directory) + " --json");
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_TRUE(nlohmann::json::accept(result.output)) << result.output;
  }

  static inline std::unique_ptr<ScratchDirectory> scratch_;
  static inline int outputs_ = 0;
};

TEST_F(MtpExtractCli, Bf16DraftIsTheLayerWithTheSourceConfigAndSmallFiles) {
  const auto out = fresh("bf16");
  auto result = extract(kModel, out);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto source = Checkpoint::open(kModel);
  auto draft = Checkpoint::open(out);
  std::size_t layer_tensors = 0;
  for (const auto& location : source.tensors()) {
    if (!location.info->name.starts_with(kMtpPrefix)) continue;
    ++layer_tensors;
    EXPECT_EQ(bytes_of(draft, location.info->name), bytes_of(source, location.info->name));
  }
  EXPECT_EQ(draft.tensors().size(), layer_tensors);
  for (const char* name : {"enorm", "hnorm", "eh_proj", "shared_head.norm"})
    EXPECT_TRUE(draft.find(std::string(kMtpPrefix) + name + ".weight")) << name;
  EXPECT_FALSE(draft.find(std::string(kMtpPrefix) + "shared_head.head.weight"));
  auto expected_config = source.config();
  EXPECT_EQ(config_of(out), expected_config);
  EXPECT_EQ(read_text_file(out / "generation_config.json"),
            read_text_file(kModel / "generation_config.json"));
  expect_valid_and_inspectable(out);
}

TEST_F(MtpExtractCli, EveryNvfp4ModuleDequantizesBitExactlyInBothLayouts) {
  for (const bool modelopt : {true, false}) {
    const auto in = path(modelopt ? "nvfp4-modelopt" : "nvfp4-compressed-tensors");
    const auto out = fresh("nvfp4-draft");
    auto result = extract(in, out);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    auto source = Checkpoint::open(in);
    auto draft = Checkpoint::open(out);
    const auto modules = quantized_mtp_modules(source);
    ASSERT_GE(modules.size(), 16u) << "the recipe no longer quantizes the MTP layer";
    for (const auto& module : modules)
      EXPECT_EQ(bytes_of(draft, module + ".weight"), nvfp4_reference(source, module, modelopt))
          << module;
    for (const auto& location : draft.tensors()) {
      const auto parameter = parse_tensor_name(location.info->name).parameter;
      EXPECT_FALSE(is_quantization_companion(parameter)) << location.info->name;
    }
    EXPECT_FALSE(config_of(out).contains("quantization_config"));
    EXPECT_FALSE(std::filesystem::exists(out / "hf_quant_config.json"));
    expect_valid_and_inspectable(out);
  }
}

TEST_F(MtpExtractCli, EveryInt4AsymmetricModuleDequantizesBitExactly) {
  const auto out = fresh("int4-draft");
  auto result = extract(path("int4"), out);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto source = Checkpoint::open(path("int4"));
  auto draft = Checkpoint::open(out);
  const auto modules = quantized_mtp_modules(source);
  ASSERT_GE(modules.size(), 16u);
  for (const auto& module : modules) {
    ASSERT_TRUE(source.find(module + ".weight_zero_point")) << module << " is not asymmetric";
    EXPECT_EQ(draft.at(module + ".weight").info->dtype, DType::BF16);
    EXPECT_EQ(bytes_of(draft, module + ".weight"), int_reference(source, module, 4)) << module;
  }
  expect_valid_and_inspectable(out);
}

// Seed 003: NVFP4 → BF16 → INT4 group 32 asymmetric, pack-quantized, as vLLM's
// compressed-tensors loader reads it.
TEST_F(MtpExtractCli, RequantizedInt4Group32DraftIsWhatVllmReads) {
  const auto in = path("nvfp4-modelopt");
  const auto out = fresh("int4-g32");
  auto result = extract(in, out, " --requant int4-g32 --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto summary = nlohmann::json::parse(result.standard_output);
  EXPECT_GE(summary["requantized_linears"].get<int>(), 16) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-staging"));

  const auto config = config_of(out);
  EXPECT_EQ(config["num_nextn_predict_layers"], 1);
  const auto& quantization = config["quantization_config"];
  EXPECT_EQ(quantization["quant_method"], "compressed-tensors");
  EXPECT_EQ(quantization["format"], "pack-quantized");
  const auto& weights = quantization["config_groups"]["group_0"]["weights"];
  EXPECT_EQ(weights["num_bits"], 4);
  EXPECT_EQ(weights["type"], "int");
  EXPECT_EQ(weights["strategy"], "group");
  EXPECT_EQ(weights["group_size"], 32);
  EXPECT_EQ(weights["symmetric"], false);
  EXPECT_NE(quantization["ignore"].dump().find("eh_proj"), std::string::npos)
      << quantization["ignore"].dump();

  auto draft = Checkpoint::open(out);
  auto source = Checkpoint::open(in);
  const auto modules = quantized_mtp_modules(draft);
  EXPECT_EQ(modules.size(), quantized_mtp_modules(source).size());
  for (const auto& module : modules) {
    const auto shape = source.at(module + ".weight_scale").info->shape;
    const std::uint64_t rows = shape[0], cols = shape[1] * 16;
    EXPECT_EQ(draft.at(module + ".weight_packed").info->shape, (Shape{rows, cols / 8})) << module;
    EXPECT_EQ(draft.at(module + ".weight_scale").info->shape, (Shape{rows, cols / 32})) << module;
    EXPECT_EQ(draft.at(module + ".weight_zero_point").info->shape,
              (Shape{(rows + 7) / 8, cols / 32}))
        << module;
  }
  expect_valid_and_inspectable(out);

  // Back to BF16: the INT4 draft is the NVFP4 draft within INT4 group-32 rounding.
  const auto nvfp4_draft = fresh("nvfp4-draft");
  ASSERT_EQ(extract(in, nvfp4_draft).exit_code, 0);
  const auto round_trip = fresh("round-trip");
  ASSERT_EQ(extract(out, round_trip).exit_code, 0);
  auto exact = Checkpoint::open(nvfp4_draft);
  auto requantized = Checkpoint::open(round_trip);
  for (const auto& module : modules) {
    const auto a = from_bf16(bytes_of(exact, module + ".weight"));
    const auto b = from_bf16(bytes_of(requantized, module + ".weight"));
    ASSERT_EQ(a.size(), b.size());
    double error = 0, energy = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      error += (a[i] - b[i]) * (a[i] - b[i]);
      energy += a[i] * a[i];
    }
    // Uniform 4-bit rounding over 32-wide groups: about 1e-3 relative; 1e-2 leaves margin.
    EXPECT_LT(error / energy, 1e-2) << module;
    EXPECT_GT(error, 0.0) << module << " was not requantized";
  }

  // Resuming the finished job changes nothing.
  const auto before = testing::directory_contents(out);
  result = extract(in, out, " --requant int4-g32 --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("already complete"), std::string::npos) << result.output;
  EXPECT_EQ(testing::directory_contents(out), before);
  EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-staging"));
  // ... and resuming it with another scheme is refused, leaving it as it was.
  result = extract(in, out, " --requant int8 --resume");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_EQ(testing::directory_contents(out), before);
}

TEST_F(MtpExtractCli, WithHeadWritesTheHeadAndEmbeddingAsTheDraftsOwn) {
  const auto out = fresh("with-head");
  auto result = extract(kModel, out, " --with-head");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto source = Checkpoint::open(kModel);
  auto draft = Checkpoint::open(out);
  EXPECT_EQ(bytes_of(draft, std::string(kMtpPrefix) + "shared_head.head.weight"),
            bytes_of(source, "lm_head.weight"));
  EXPECT_EQ(bytes_of(draft, std::string(kMtpPrefix) + "embed_tokens.weight"),
            bytes_of(source, "model.embed_tokens.weight"));
  EXPECT_FALSE(draft.find("lm_head.weight"));
  expect_valid_and_inspectable(out);
}

TEST_F(MtpExtractCli, DryRunPrintsThePlanAndWritesNothing) {
  const auto out = fresh("dry-run");
  auto result = extract(path("nvfp4-compressed-tensors"), out, " --dry-run --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  const auto plan = nlohmann::json::parse(result.standard_output);
  EXPECT_EQ(plan["first_layer"], 4);
  EXPECT_EQ(plan["dequantized_modules"].size(),
            quantized_mtp_modules(Checkpoint::open(path("nvfp4-compressed-tensors"))).size());

  ASSERT_EQ(extract(path("nvfp4-compressed-tensors"), out).exit_code, 0);
  const auto draft = Checkpoint::open(out);
  EXPECT_EQ(plan["tensors"], draft.tensors().size());
  EXPECT_EQ(plan["output_bytes"], draft.tensor_bytes());
}

TEST_F(MtpExtractCli, RefusesBeforeWritingAnyByte) {
  // OUT holding something else, with or without a requantization (whose first stage writes
  // a staging directory inside OUT).
  for (const char* extra : {"", " --requant int4-g32"}) {
    const auto out = fresh("occupied");
    std::filesystem::create_directories(out);
    write_file_atomically(out / "notes.txt", "mine");
    auto result = extract(kModel, out, extra);
    EXPECT_EQ(result.exit_code, 2) << extra << "\n" << result.output;
    EXPECT_NE(result.output.find("not empty"), std::string::npos) << result.output;
    EXPECT_EQ(testing::directory_contents(out).size(), 1u) << extra;
    EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-staging")) << extra;
  }

  // config.json declares an MTP layer but no tensor of it is stored.
  const auto layers_only = fresh("no-mtp-tensors");
  testing::rewrite_checkpoint(kModel, layers_only, [](testing::EditableTensor& tensor) {
    return !tensor.spec.name.starts_with(kMtpPrefix);
  });
  auto out = fresh("refused");
  auto result = extract(layers_only, out);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("layout.missing_tensor"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("model.layers.4."), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out));

  // Unknown scheme, and OUT inside IN.
  result = extract(kModel, out, " --requant int5-g7");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("no scheme 'int5-g7'"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  result = extract(layers_only, layers_only / "draft");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_FALSE(std::filesystem::exists(layers_only / "draft"));
}

// A full-model recipe that keeps MTP layers BF16 would give the BF16 draft under a
// requantization's name: refused, and the staged BF16 draft serves a resumed run.
TEST_F(MtpExtractCli, RecipeThatQuantizesNothingIsRefusedAndTheStagedDraftReused) {
  const auto out = fresh("keeps-mtp");
  auto result = extract(path("nvfp4-modelopt"), out,
                        " --recipe " + quoted(shipped_recipe("glm5-w4a16-experts-seed002.yaml")) +
                            " --param experts=int4");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("quantizes none of the draft's Linears"), std::string::npos)
      << result.output;
  EXPECT_FALSE(Checkpoint::open(out / ".quantsmith-staging").tensors().empty());

  result = extract(path("nvfp4-modelopt"), out, " --requant int8 --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(
      config_of(out)["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"], 8);
  EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-staging"));
  expect_valid_and_inspectable(out);
}

// The job behind `mtp extract`, called as a library: both stages through the caller's plan
// runner, the staging directory gone and the finished record left, and a resume that runs
// nothing. Without a recipe, one stage writes OUT itself.
TEST(MtpExtractJob, RunsBothStagesThroughTheCallersRunnerAndResumesToNothing) {
  ScratchDirectory scratch("mtp-extract-job");
  const auto source = Checkpoint::open(kModel);
  const auto planned = plan_mtp_extract(source, {}, [](const DequantizeRequest& request) {
    return make_dequantize_transform(request);
  });
  std::vector<std::string> stages;
  const PlanRunner run_plan = [&](const Plan& plan, ExecutionOptions options,
                                  const std::string& label) {
    stages.push_back(label);
    return execute_plan(plan, options);
  };
  auto settings = std::make_shared<QuantizerSettings>();
  const RecipeQuantizerFactory quantizer = [settings](const Recipe&) {
    return [settings](const QuantizeRequest& request) {
      return make_quantize_transform(request, *settings);
    };
  };

  MtpExtractJobOptions job;
  job.output = scratch.path() / "bf16";
  auto result = run_mtp_extract_job(source, planned, job, quantizer, run_plan);
  EXPECT_EQ(stages, std::vector<std::string>{"mtp extract"});
  EXPECT_FALSE(result.report.interrupted);
  EXPECT_EQ(result.requantized_linears, 0u);
  EXPECT_EQ(Checkpoint::open(job.output).tensors().size(), planned.plan.output_specs().size());

  stages.clear();
  job.output = scratch.path() / "int4";
  job.requant = parse_recipe(R"(description: the MTP layer's Linears INT4
format: compressed-tensors
rules:
  - name: router, indexer, embeddings, lm_head and MTP projections stay BF16
    category: [lm_head, router, indexer, mtp_extra, embedding]
    action: keep
  - name: MTP layer INT4
    mtp: true
    action: int4
)",
                             "test recipe");
  job.requant_identity = "|test";
  result = run_mtp_extract_job(source, planned, job, quantizer, run_plan);
  EXPECT_EQ(stages, (std::vector<std::string>{"mtp extract", "mtp requantize"}));
  EXPECT_FALSE(result.already_complete);
  EXPECT_GE(result.requantized_linears, 16u);
  EXPECT_GT(result.bytes_written, 0u);
  EXPECT_FALSE(std::filesystem::exists(job.output / ".quantsmith-staging"));
  EXPECT_TRUE(std::filesystem::exists(job.output / ".quantsmith-mtp-extract-finished"));
  const auto written = testing::directory_contents(job.output);

  stages.clear();
  job.mode = OutputMode::Resume;
  result = run_mtp_extract_job(source, planned, job, quantizer, run_plan);
  EXPECT_TRUE(result.already_complete);
  EXPECT_TRUE(stages.empty());
  EXPECT_EQ(testing::directory_contents(job.output), written);

  // Another choice of recipe is another job: refused, not mixed.
  job.requant_identity = "|another";
  EXPECT_EQ(testing::error_kind_of(
                [&] { run_mtp_extract_job(source, planned, job, quantizer, run_plan); }),
            "job.fingerprint_mismatch");
  EXPECT_TRUE(stages.empty());
}

}  // namespace
}  // namespace qs
