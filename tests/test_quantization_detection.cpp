#include <gtest/gtest.h>

#include <cstring>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::ScratchDirectory;

// One tensor of a hand-made checkpoint: its spec and bytes (zeros unless given).
struct Entry {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};

Entry entry(std::string name, DType dtype, Shape shape) {
  TensorSpec spec{std::move(name), dtype, std::move(shape)};
  std::vector<std::byte> bytes(spec.byte_size());
  return {std::move(spec), std::move(bytes)};
}

Entry weight_shape(const std::string& module, std::int64_t rows, std::int64_t columns) {
  auto e = entry(module + ".weight_shape", DType::I64, {2});
  std::memcpy(e.bytes.data(), &rows, 8);
  std::memcpy(e.bytes.data() + 8, &columns, 8);
  return e;
}

Checkpoint write(const std::filesystem::path& directory, const std::vector<Entry>& entries) {
  std::vector<TensorSpec> specs;
  for (const auto& e : entries) specs.push_back(e.spec);
  ShardedCheckpointWriter writer(directory, specs, 1ull << 40);
  for (const auto& e : entries) writer.write_tensor(e.spec.name, e.bytes);
  writer.finish();
  return Checkpoint::open(directory);
}

TEST(QuantizationDetection, BundledModelIsDense) {
  auto detection = detect_quantization(Checkpoint::open(QS_TEST_DATA_DIR "/glm5-tiny"));
  EXPECT_EQ(detection.summary, "none");
  EXPECT_TRUE(detection.declared.empty());
  ASSERT_EQ(detection.layouts.size(), 1u);
  EXPECT_EQ(detection.layouts.at("dense").modules, 283u) << "292 tensors less 9 LayerNorm/bias";
}

TEST(QuantizationDetection, Nvfp4ModeloptFromItsTensors) {
  ScratchDirectory scratch("detect");
  auto checkpoint =
      write(scratch.path(),
            {entry("a.weight", DType::U8, {4, 8}), entry("a.weight_scale", DType::F8_E4M3, {4, 1}),
             entry("a.weight_scale_2", DType::F32, {}), entry("b.weight", DType::BF16, {4, 16})});
  auto detection = detect_quantization(checkpoint);
  EXPECT_EQ(detection.summary, "nvfp4-modelopt");
  EXPECT_EQ(detection.layouts.at("nvfp4-modelopt").modules, 1u);
  EXPECT_EQ(detection.layouts.at("nvfp4-modelopt").bytes, 32u + 4u + 4u);
  EXPECT_EQ(detection.layouts.at("dense").modules, 1u);
}

TEST(QuantizationDetection, PackQuantizedBitWidthFromWeightShape) {
  ScratchDirectory scratch("detect");
  auto checkpoint =
      write(scratch.path(),
            {entry("int4.weight_packed", DType::I32, {4, 2}),
             entry("int4.weight_scale", DType::BF16, {4, 1}),
             entry("int4.weight_zero_point", DType::I32, {1, 1}), weight_shape("int4", 4, 16),
             entry("int8.weight_packed", DType::I32, {4, 4}),
             entry("int8.weight_scale", DType::BF16, {4, 1}), weight_shape("int8", 4, 16)});
  auto detection = detect_quantization(checkpoint);
  EXPECT_EQ(detection.summary, "mixed");
  EXPECT_EQ(detection.layouts.at("pack-quantized-int4").modules, 1u);
  EXPECT_EQ(detection.layouts.at("pack-quantized-int8").modules, 1u);
}

TEST(QuantizationDetection, OtherLayoutsAndDeclaredConfig) {
  ScratchDirectory scratch("detect");
  write_file_atomically(scratch.path() / "config.json",
                        R"({"model_type": "x", "quantization_config": {"quant_method":
                            "compressed-tensors", "format": "nvfp4-pack-quantized"}})");
  auto checkpoint = write(scratch.path(), {entry("n.weight_packed", DType::U8, {4, 8}),
                                           entry("n.weight_scale", DType::F8_E4M3, {4, 1}),
                                           entry("n.weight_global_scale", DType::F32, {1})});
  auto detection = detect_quantization(checkpoint);
  EXPECT_EQ(detection.summary, "nvfp4-compressed-tensors");
  EXPECT_EQ(detection.declared, "config.json: compressed-tensors/nvfp4-pack-quantized");

  ScratchDirectory other("detect");
  write_file_atomically(other.path() / "hf_quant_config.json",
                        R"({"quantization": {"quant_algo": "FP8"}})");
  auto fp8 =
      write(other.path(),
            {entry("f.weight", DType::F8_E4M3, {4, 4}), entry("f.weight_scale", DType::F32, {1}),
             entry("i.weight", DType::I8, {4, 4}), entry("i.weight_scale", DType::F32, {4, 1}),
             entry("u.weight", DType::U8, {4, 4})});
  detection = detect_quantization(fp8);
  EXPECT_EQ(detection.layouts.at("fp8").modules, 1u);
  EXPECT_EQ(detection.layouts.at("int8").modules, 1u);
  EXPECT_EQ(detection.layouts.at("unrecognized").modules, 1u) << "U8 weight without scales";
  EXPECT_EQ(detection.declared, "hf_quant_config.json: modelopt/FP8");
}

}  // namespace
}  // namespace qs
