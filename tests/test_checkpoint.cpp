#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/validate/checkpoint_summary.h"
#include "test_support.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::copy_bundled_model;
using testing::error_kind_of;
using testing::ScratchDirectory;

const fs::path kFixture = QS_TEST_DATA_DIR "/glm5-tiny";

TEST(Checkpoint, OpensTheBundledModel) {
  auto checkpoint = Checkpoint::open(kFixture);
  EXPECT_EQ(checkpoint.shards().size(), 2u);
  EXPECT_EQ(checkpoint.tensors().size(), 292u);
  EXPECT_TRUE(checkpoint.has_index());
  EXPECT_EQ(checkpoint.tensor_bytes(), 19'041'280u);
  EXPECT_EQ(checkpoint.index()["metadata"]["total_size"].get<std::uint64_t>(), 19'041'280u);
  EXPECT_EQ(checkpoint.config()["num_hidden_layers"].get<int>(), 4);
  auto embed = checkpoint.find("model.embed_tokens.weight");
  ASSERT_TRUE(embed);
  EXPECT_EQ(embed->info->shape, (Shape{512, 256}));
  EXPECT_EQ(checkpoint.at("lm_head.weight").shard->path().filename(),
            "model-00002-of-00002.safetensors");
  EXPECT_FALSE(checkpoint.find("nonexistent"));
  EXPECT_EQ(error_kind_of([&] { checkpoint.at("nonexistent"); }), "checkpoint.missing_tensor");
}

// What `inspect` prints, as the library computes it: 4 layers (1 dense, 3 MoE of 16 experts)
// and the MTP layer, every tensor counted once by category and once by dtype, no quantization.
TEST(CheckpointSummary, CountsTheBundledModelByLayerCategoryAndDtype) {
  auto checkpoint = Checkpoint::open(kFixture);
  const auto summary = summarize_checkpoint(checkpoint);
  EXPECT_EQ(summary.layers, (std::set<int>{0, 1, 2, 3}));
  EXPECT_EQ(summary.mtp_layers, (std::set<int>{4}));
  ASSERT_EQ(summary.experts_by_layer.size(), 4u);  // layers 1-3 and the MTP layer
  for (const auto& [layer, experts] : summary.experts_by_layer)
    EXPECT_EQ(experts.size(), 16u) << layer;
  for (const auto* tallies : {&summary.by_category, &summary.by_dtype}) {
    std::uint64_t tensors = 0, bytes = 0;
    for (const auto& [name, tally] : *tallies) {
      tensors += tally.tensors;
      bytes += tally.bytes;
    }
    EXPECT_EQ(tensors, checkpoint.tensors().size());
    EXPECT_EQ(bytes, checkpoint.tensor_bytes());
  }
  EXPECT_EQ(summary.quantization.summary, "none");
  EXPECT_TRUE(summary.config_groups.empty());

  const auto json = checkpoint_summary_json(checkpoint, summary);
  EXPECT_EQ(json["tensors"], 292);
  EXPECT_EQ(json["mtp_layers"], nlohmann::json::array({4}));
  EXPECT_EQ(json["experts_per_layer"]["1"], 16);
  EXPECT_EQ(json["config"]["num_hidden_layers"], 4);
  EXPECT_FALSE(json["config"].contains("rope_theta"));  // only the keys a user checks first
}

TEST(Checkpoint, RoundTripsTheBundledModelByteIdentically) {
  ScratchDirectory scratch("ckpt");
  auto in = Checkpoint::open(kFixture);
  std::vector<std::vector<TensorSpec>> plan;
  for (const auto& shard : in.shards()) {
    plan.emplace_back();
    for (const auto& tensor : shard->tensors())
      plan.back().push_back({tensor.name, tensor.dtype, tensor.shape});
  }
  ShardedCheckpointWriter writer(scratch.path(), plan);
  for (const auto& location : in.tensors())
    writer.write_tensor(location.info->name, location.shard->read(*location.info));
  writer.finish();
  copy_auxiliary_files(in, scratch.path());

  for (const char* name : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", "config.json", "generation_config.json"})
    EXPECT_EQ(read_text_file(kFixture / name), read_text_file(scratch.path() / name)) << name;
}

TEST(Checkpoint, SizeCappedWriterShardsAndIndexesLast) {
  ScratchDirectory scratch("ckpt");
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 5; ++i) specs.push_back({fmt::format("t{}", i), DType::U8, {100}});
  auto plan = split_into_shards(specs, 250);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0].size(), 2u);
  EXPECT_EQ(plan[2].size(), 1u);

  ShardedCheckpointWriter writer(scratch.path(), specs, 250);
  std::string chunk(50, 'z');
  for (int i = 0; i < 9; ++i) writer.write(std::as_bytes(std::span(chunk.data(), chunk.size())));
  EXPECT_TRUE(fs::exists(scratch.path() / "model-00001-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(scratch.path() / kIndexFileName)) << "index must come last";
  writer.write(std::as_bytes(std::span(chunk.data(), chunk.size())));
  writer.finish();
  auto checkpoint = Checkpoint::open(scratch.path());
  EXPECT_EQ(checkpoint.tensors().size(), 5u);
  EXPECT_EQ(checkpoint.index()["metadata"]["total_size"].get<int>(), 500);
}

TEST(Checkpoint, OversizedTensorGetsItsOwnShard) {
  std::vector<TensorSpec> specs{
      {"a", DType::U8, {10}}, {"big", DType::U8, {1000}}, {"c", DType::U8, {10}}};
  auto plan = split_into_shards(specs, 100);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[1][0].name, "big");
}

TEST(Checkpoint, SingleShardIsModelSafetensorsWithoutIndex) {
  ScratchDirectory scratch("ckpt");
  ShardedCheckpointWriter writer(scratch.path(), {{"x", DType::U8, {3}}}, 1 << 20);
  writer.write_tensor("x", std::as_bytes(std::span("abc", 3)));
  writer.finish();
  EXPECT_TRUE(fs::exists(scratch.path() / kSingleFileName));
  EXPECT_FALSE(fs::exists(scratch.path() / kIndexFileName));
  EXPECT_EQ(Checkpoint::open(scratch.path()).tensors().size(), 1u);
  EXPECT_EQ(Checkpoint::open(scratch.path() / kSingleFileName).tensors().size(), 1u);
}

TEST(Checkpoint, AbandonedWriterLeavesNothingThatLooksValid) {
  ScratchDirectory scratch("ckpt");
  {
    ShardedCheckpointWriter writer(scratch.path(), {{"a", DType::U8, {4}}, {"b", DType::U8, {4}}},
                                   4);
    writer.write_tensor("a", std::as_bytes(std::span("abcd", 4)));
  }
  EXPECT_FALSE(fs::exists(scratch.path() / kIndexFileName));
  for (const auto& entry : fs::directory_iterator(scratch.path()))
    EXPECT_EQ(entry.path().filename(), "model-00001-of-00002.safetensors");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "checkpoint.no_weights");
}

TEST(CheckpointErrors, MissingShard) {
  ScratchDirectory scratch("ckpt");
  copy_bundled_model(scratch.path());
  fs::remove(scratch.path() / "model-00002-of-00002.safetensors");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.missing_shard");
}

TEST(CheckpointErrors, IndexPointsToMissingTensor) {
  ScratchDirectory scratch("ckpt");
  copy_bundled_model(scratch.path());
  auto index = nlohmann::json::parse(read_text_file(scratch.path() / kIndexFileName));
  index["weight_map"]["model.layers.9.ghost.weight"] = "model-00001-of-00002.safetensors";
  write_file_atomically(scratch.path() / kIndexFileName, index.dump(2));
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.missing_tensor");
}

TEST(CheckpointErrors, IndexNamesTheWrongShard) {
  ScratchDirectory scratch("ckpt");
  copy_bundled_model(scratch.path());
  auto index = nlohmann::json::parse(read_text_file(scratch.path() / kIndexFileName));
  index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors";
  write_file_atomically(scratch.path() / kIndexFileName, index.dump(2));
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.missing_tensor");
}

TEST(CheckpointErrors, TensorMissingFromIndexIsOrphaned) {
  ScratchDirectory scratch("ckpt");
  copy_bundled_model(scratch.path());
  auto index = nlohmann::json::parse(read_text_file(scratch.path() / kIndexFileName));
  index["weight_map"].erase("model.norm.weight");
  write_file_atomically(scratch.path() / kIndexFileName, index.dump(2));
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.orphan_tensor");
}

TEST(CheckpointErrors, IndexNotJsonOrWithoutWeightMap) {
  ScratchDirectory scratch("ckpt");
  copy_bundled_model(scratch.path());
  write_file_atomically(scratch.path() / kIndexFileName, "{\"weight_map\": ");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.invalid_json");
  write_file_atomically(scratch.path() / kIndexFileName, "{\"metadata\": {}}");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.invalid");
  write_file_atomically(scratch.path() / kIndexFileName,
                        R"({"weight_map": {"x": "../model.safetensors"}})");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "index.invalid");
}

TEST(CheckpointErrors, SameTensorInTwoShards) {
  ScratchDirectory scratch("ckpt");
  copy_bundled_model(scratch.path());
  fs::copy_file(scratch.path() / "model-00001-of-00002.safetensors",
                scratch.path() / "model-00002-of-00002.safetensors",
                fs::copy_options::overwrite_existing);
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }),
            "checkpoint.duplicate_tensor");
}

TEST(CheckpointErrors, NoWeightsAndNoSuchPath) {
  ScratchDirectory scratch("ckpt");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path()); }), "checkpoint.no_weights");
  EXPECT_EQ(error_kind_of([&] { Checkpoint::open(scratch.path() / "nope"); }),
            "checkpoint.not_found");
}

TEST(OutputDirectory, RefusesInputItselfOrInsideIt) {
  ScratchDirectory scratch("ckpt");
  auto input = scratch.path() / "in";
  fs::create_directories(input);
  EXPECT_EQ(error_kind_of([&] { check_output_directory(input, {input}); }), "output.inside_input");
  EXPECT_EQ(error_kind_of([&] { check_output_directory(input / ".", {input}); }),
            "output.inside_input");
  EXPECT_EQ(error_kind_of([&] { check_output_directory(input / "sub" / "out", {input}); }),
            "output.inside_input");
  EXPECT_EQ(error_kind_of([&] { check_output_directory(scratch.path() / "in-out", {input}); }),
            "no error");
  EXPECT_EQ(error_kind_of([&] { check_output_directory(scratch.path() / "out", {input}); }),
            "no error");
}

TEST(OutputDirectory, AuxiliaryFilesAreConfigAndTokenizerNotWeights) {
  auto checkpoint = Checkpoint::open(kFixture);
  std::vector<std::string> names;
  for (const auto& file : checkpoint.auxiliary_files()) names.push_back(file.filename());
  EXPECT_NE(std::find(names.begin(), names.end(), "config.json"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "generation_config.json"), names.end());
  for (const auto& name : names) {
    EXPECT_FALSE(name.ends_with(".safetensors")) << name;
    EXPECT_NE(name, kIndexFileName);
  }
}

}  // namespace
}  // namespace qs
