#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/model/synthetic_model.h"
#include "test_support.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::error_kind_of;
using testing::run_cli;
using testing::ScratchDirectory;

const fs::path kFixture = QS_TEST_DATA_DIR "/glm5-tiny";

SyntheticModelSpec tiny() { return synthetic_preset("tiny").spec; }

std::vector<std::byte> read_tensor(const Checkpoint& checkpoint, const std::string& name) {
  const auto& location = checkpoint.at(name);
  return location.shard->read(*location.info);
}

std::vector<float> generate_f32(const SyntheticModelSpec& spec, const std::string& name) {
  for (const auto& tensor : tensor_specs(spec)) {
    if (tensor.name != name) continue;
    std::vector<std::byte> bytes(tensor.byte_size());
    generate_synthetic_tensor(spec, name, 0, bytes);
    std::vector<float> values(element_count(tensor.shape));
    decode_to_f32(tensor.dtype, bytes, values);
    return values;
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

struct Moments {
  double mean = 0;
  double std = 0;
};
Moments moments_of(const std::vector<float>& values) {
  double sum = 0, squares = 0;
  for (float v : values) sum += v;
  Moments m;
  m.mean = sum / static_cast<double>(values.size());
  for (float v : values) squares += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(squares / static_cast<double>(values.size()));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Layout and config against the bundled fixture

TEST(Synth, TinyPresetHasTheFixturesTensorsInTheFixturesOrder) {
  auto fixture = Checkpoint::open(kFixture);
  auto specs = tensor_specs(tiny());
  ASSERT_EQ(specs.size(), fixture.tensors().size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto& expected = *fixture.tensors()[i].info;
    EXPECT_EQ(specs[i].name, expected.name) << i;
    EXPECT_EQ(specs[i].shape, expected.shape) << expected.name;
    EXPECT_EQ(specs[i].dtype, expected.dtype) << expected.name;
  }
  EXPECT_EQ(total_tensor_bytes(tiny()), fixture.tensor_bytes());
}

TEST(Synth, TinyConfigsEqualTheFixturesByteForByte) {
  EXPECT_EQ(config_json(tiny()).dump(2) + "\n", read_text_file(kFixture / "config.json"));
  EXPECT_EQ(generation_config_json(tiny()).dump(2) + "\n",
            read_text_file(kFixture / "generation_config.json"));
}

TEST(Synth, Glm5PresetHasTheRealModelsCountsAndConfig) {
  const auto& spec = synthetic_preset("glm5").spec;
  auto specs = tensor_specs(spec);
  // docs/models/glm_moe_dsa.md, "MTP layer": 787 tensors per MoE layer, 791 in the MTP layer;
  // 3 dense layers of 17.
  EXPECT_EQ(specs.size(), 3u + 3 * 17 + 75 * 787 + 791);
  std::uint64_t parameters = 0;
  for (const auto& tensor : specs) parameters += element_count(tensor.shape);
  // "Family sizes": 743.9 B main model + 10.0 B MTP layer.
  EXPECT_NEAR(static_cast<double>(parameters) / 1e9, 753.9, 0.1);
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  EXPECT_EQ(specs[specs.size() - 3].name, "model.layers.78.shared_head.norm.weight");

  auto config = config_json(spec);
  EXPECT_EQ(config["architectures"][0], "GlmMoeDsaForCausalLM");
  EXPECT_EQ(config["model_type"], "glm_moe_dsa");
  EXPECT_EQ(config["num_hidden_layers"], 78);
  EXPECT_EQ(config["n_routed_experts"], 256);
  EXPECT_EQ(config["qk_head_dim"], 256);
  EXPECT_EQ(config["head_dim"], 64);
  EXPECT_EQ(config["max_position_embeddings"], 202752);
  EXPECT_EQ(config["eos_token_id"], nlohmann::json({154820, 154827, 154829}));
  EXPECT_EQ(config["pad_token_id"], 154820);
  EXPECT_FALSE(config.contains("bos_token_id"));
}

TEST(Synth, PresetSizesAreWhatTheirNamesPromise) {
  EXPECT_GT(total_tensor_bytes(synthetic_preset("glm5").spec), 1'400'000'000'000u);
  const auto bench = total_tensor_bytes(synthetic_preset("bench-4g").spec);
  EXPECT_GE(bench, 4'000'000'000u);
  EXPECT_LE(bench, 5'000'000'000u);
  auto layer = tensor_specs(synthetic_preset("glm5-moe-layer").spec);
  std::set<std::string> layer_prefixes;
  for (const auto& tensor : layer)
    if (tensor.name.starts_with("model.layers."))
      layer_prefixes.insert(tensor.name.substr(0, tensor.name.find('.', 13)));
  EXPECT_EQ(layer_prefixes, std::set<std::string>{"model.layers.0"});
  EXPECT_EQ(layer.size(), 3u + 787);
  EXPECT_EQ(error_kind_of([] { synthetic_preset("nope"); }), "synth.unknown_preset");
}

// ---------------------------------------------------------------------------------------------
// Overrides and validation

TEST(Synth, OverridesChangeShapesAndCounts) {
  auto spec = tiny();
  spec.num_hidden_layers = 3;
  spec.first_k_dense_replace = 2;
  spec.num_nextn_predict_layers = 2;
  spec.n_routed_experts = 5;
  spec.n_shared_experts = 0;
  spec.num_experts_per_tok = 2;
  spec.hidden_size = 384;
  spec.moe_intermediate_size = 256;
  spec.vocab_size = 300;
  auto specs = tensor_specs(spec);
  std::map<std::string, Shape> shapes;
  for (const auto& tensor : specs) shapes[tensor.name] = tensor.shape;

  EXPECT_EQ(shapes.at("model.embed_tokens.weight"), (Shape{300, 384}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.down_proj.weight"), (Shape{384, 512}));
  EXPECT_EQ(shapes.at("model.layers.2.mlp.experts.4.gate_proj.weight"), (Shape{256, 384}));
  EXPECT_EQ(shapes.at("model.layers.2.mlp.gate.e_score_correction_bias"), (Shape{5}));
  EXPECT_FALSE(shapes.contains("model.layers.2.mlp.experts.5.gate_proj.weight"));
  EXPECT_FALSE(shapes.contains("model.layers.2.mlp.shared_experts.up_proj.weight"));
  EXPECT_FALSE(shapes.contains("model.layers.2.enorm.weight"));
  // Two MTP layers at indices 3 and 4, both MoE.
  EXPECT_EQ(shapes.at("model.layers.3.eh_proj.weight"), (Shape{384, 768}));
  EXPECT_EQ(shapes.at("model.layers.4.eh_proj.weight"), (Shape{384, 768}));
  EXPECT_TRUE(shapes.contains("model.layers.4.mlp.experts.0.down_proj.weight"));
  EXPECT_FALSE(shapes.contains("model.layers.5.input_layernorm.weight"));
  // 3 head/tail + 2 dense × 17 + 1 MoE × (14 + 2 + 15) + 2 MTP × (14 + 2 + 15 + 4).
  EXPECT_EQ(specs.size(), 3u + 2 * 17 + 31 + 2 * 35);

  // Special ids stay while the vocabulary holds them and move to its end when it does not.
  auto config = config_json(spec);
  EXPECT_EQ(config["vocab_size"], 300);
  EXPECT_EQ(config["bos_token_id"], 256);
  EXPECT_EQ(config["eos_token_id"], nlohmann::json({257}));
  spec.vocab_size = 200;
  config = config_json(spec);
  EXPECT_EQ(config["bos_token_id"], 197);
  EXPECT_EQ(config["eos_token_id"], nlohmann::json({198}));
  EXPECT_EQ(config["pad_token_id"], 199);

  auto glm5 = synthetic_preset("glm5").spec;
  glm5.vocab_size = 1000;
  config = config_json(glm5);
  EXPECT_EQ(config["eos_token_id"], nlohmann::json({997, 998, 999}));
  EXPECT_EQ(config["pad_token_id"], 997);
}

TEST(Synth, ImpossibleDimensionsAreBadInput) {
  auto expect_invalid = [](auto&& change) {
    auto spec = tiny();
    change(spec);
    EXPECT_EQ(error_kind_of([&] { tensor_specs(spec); }), "layout.invalid_dimensions");
  };
  expect_invalid([](SyntheticModelSpec& s) { s.num_experts_per_tok = 17; });
  expect_invalid([](SyntheticModelSpec& s) { s.first_k_dense_replace = 5; });
  expect_invalid([](SyntheticModelSpec& s) { s.hidden_size = 0; });
  expect_invalid([](SyntheticModelSpec& s) { s.qk_rope_head_dim = 31; });
  expect_invalid([](SyntheticModelSpec& s) { s.index_head_dim = 32; });
  expect_invalid([](SyntheticModelSpec& s) { s.n_routed_experts = 0; });
  expect_invalid([](SyntheticModelSpec& s) { s.vocab_size = 2; });
  auto dense_only = tiny();
  dense_only.first_k_dense_replace = 4;
  dense_only.num_nextn_predict_layers = 0;
  dense_only.n_routed_experts = 0;  // no MoE layer needs experts
  EXPECT_EQ(error_kind_of([&] { tensor_specs(dense_only); }), "no error");
}

// ---------------------------------------------------------------------------------------------
// Values

TEST(Synth, ValuesDependOnlyOnSeedNameAndIndex) {
  auto spec = tiny();
  const std::string name = "model.layers.1.mlp.experts.3.down_proj.weight";  // [256, 128]
  std::vector<std::byte> whole(256 * 128 * 2), pieces(whole.size());
  generate_synthetic_tensor(spec, name, 0, whole);
  // Odd split points, one of them inside a row and not on an element pair.
  const std::uint64_t cuts[] = {0, 1, 777, 20000, 256 * 128};
  for (std::size_t i = 0; i + 1 < std::size(cuts); ++i)
    generate_synthetic_tensor(spec, name, cuts[i],
                              std::span(pieces).subspan(cuts[i] * 2, (cuts[i + 1] - cuts[i]) * 2));
  EXPECT_EQ(whole, pieces);

  std::vector<std::byte> one_thread(whole.size());
  {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 1);
    generate_synthetic_tensor(spec, name, 0, one_thread);
  }
  EXPECT_EQ(whole, one_thread);

  auto reseeded = spec;
  reseeded.seed = 1;
  std::vector<std::byte> other_seed(whole.size());
  generate_synthetic_tensor(reseeded, name, 0, other_seed);
  EXPECT_NE(whole, other_seed);

  std::vector<std::byte> other_tensor(whole.size());
  generate_synthetic_tensor(spec, "model.layers.1.mlp.experts.4.down_proj.weight", 0, other_tensor);
  EXPECT_NE(whole, other_tensor);
  EXPECT_EQ(error_kind_of([&] { generate_synthetic_tensor(spec, "nope", 0, whole); }),
            "synth.unknown_tensor");
}

// Reproducible means across machines and versions too: results recorded from a synthetic model
// (benchmarks, cached test data) stay comparable. Changing the generator must be deliberate.
TEST(Synth, BytesArePinned) {
  auto fnv1a = [](const std::vector<std::byte>& bytes) {
    std::uint64_t hash = 0xCBF29CE484222325ull;
    for (auto b : bytes) hash = (hash ^ static_cast<std::uint8_t>(b)) * 0x100000001B3ull;
    return hash;
  };
  auto tensor_hash = [&](const std::string& name, std::uint64_t bytes) {
    std::vector<std::byte> data(bytes);
    generate_synthetic_tensor(tiny(), name, 0, data);
    return fnv1a(data);
  };
  EXPECT_EQ(tensor_hash("model.layers.1.mlp.experts.0.gate_proj.weight", 128 * 256 * 2),
            0x1d06fb4750e7d1d9u);
  EXPECT_EQ(tensor_hash("model.layers.1.mlp.gate.e_score_correction_bias", 16 * 4),
            0x24bfb1d416b01cfeu);
  EXPECT_EQ(tensor_hash("model.norm.weight", 256 * 2), 0xbe24fc441cb5eeb2u);
}

TEST(Synth, LinearWeightsHaveTrainedScaleAndOutlierColumns) {
  auto spec = tiny();
  spec.hidden_size = 2048;  // in_features 2048: σ = 1/sqrt(2048), 0.5% = 10 outlier columns
  const std::uint64_t rows = 128, columns = 2048;
  auto values = generate_f32(spec, "model.layers.2.mlp.experts.7.gate_proj.weight");
  ASSERT_EQ(values.size(), rows * columns);
  for (float v : values) ASSERT_TRUE(std::isfinite(v));

  std::vector<double> column_rms(columns);
  for (std::uint64_t c = 0; c < columns; ++c) {
    double squares = 0;
    for (std::uint64_t r = 0; r < rows; ++r)
      squares += double(values[r * columns + c]) * values[r * columns + c];
    column_rms[c] = std::sqrt(squares / rows);
  }
  auto sorted = column_rms;
  std::nth_element(sorted.begin(), sorted.begin() + columns / 2, sorted.end());
  const double median = sorted[columns / 2];
  std::vector<float> ordinary;
  std::size_t outliers = 0;
  for (std::uint64_t c = 0; c < columns; ++c) {
    if (column_rms[c] > 5 * median) {
      ++outliers;
      EXPECT_GT(column_rms[c], 8 * median);
      EXPECT_LT(column_rms[c], 35 * median);
      continue;
    }
    for (std::uint64_t r = 0; r < rows; ++r) ordinary.push_back(values[r * columns + c]);
  }
  EXPECT_EQ(outliers, 10u);
  const double sigma = 1.0 / std::sqrt(2048.0);
  auto m = moments_of(ordinary);
  EXPECT_NEAR(m.mean, 0.0, 0.02 * sigma);
  EXPECT_GT(m.std, 0.95 * sigma);
  EXPECT_LT(m.std, 1.08 * sigma);
  // A sparse heavy tail: some values past 4σ, none past the generator's bound.
  double largest = 0;
  for (float v : ordinary) largest = std::max(largest, std::fabs(double(v)));
  EXPECT_GT(largest, 5 * sigma);
  EXPECT_LT(largest, 14 * sigma);

  // A narrow Linear still gets one outlier column.
  auto narrow = generate_f32(tiny(), "model.layers.0.self_attn.indexer.weights_proj.weight");
  EXPECT_EQ(narrow.size(), 16u * 256);
}

TEST(Synth, NormsEmbeddingsAndRouterBiasesLookTrained) {
  auto spec = tiny();
  auto norm = moments_of(generate_f32(spec, "model.layers.1.input_layernorm.weight"));
  EXPECT_NEAR(norm.mean, 1.0, 0.015);
  EXPECT_NEAR(norm.std, 0.05, 0.01);
  auto embed = moments_of(generate_f32(spec, "model.embed_tokens.weight"));
  EXPECT_NEAR(embed.mean, 0.0, 0.001);
  EXPECT_NEAR(embed.std, 0.02, 0.001);
  auto bias = generate_f32(spec, "model.layers.3.mlp.gate.e_score_correction_bias");
  ASSERT_EQ(bias.size(), 16u);
  for (float v : bias) EXPECT_LT(std::fabs(v), 0.06f);
  EXPECT_GT(moments_of(bias).std, 0.003);
  auto k_norm_bias = moments_of(generate_f32(spec, "model.layers.0.self_attn.indexer.k_norm.bias"));
  EXPECT_LT(std::fabs(k_norm_bias.mean), 0.01);
}

// ---------------------------------------------------------------------------------------------
// Files

void expect_same_tensor_bytes(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& location : a.tensors())
    EXPECT_EQ(read_tensor(a, location.info->name), read_tensor(b, location.info->name))
        << location.info->name;
}

TEST(Synth, WritesALoadableCheckpointLikeTheFixture) {
  ScratchDirectory scratch("synth");
  const fs::path out = scratch.path() / "tiny";
  std::vector<SyntheticWriteProgress> reports;
  auto summary = write_synthetic_checkpoint(
      tiny(), out, [&](const SyntheticWriteProgress& p) { reports.push_back(p); });
  EXPECT_EQ(summary.tensors, 292u);
  EXPECT_EQ(summary.tensor_bytes, 19'041'280u);
  EXPECT_EQ(summary.shards, 2u);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back().tensors_done, 292u);
  EXPECT_EQ(reports.back().bytes_done, 19'041'280u);
  EXPECT_EQ(reports.back().bytes_total, 19'041'280u);

  auto written = Checkpoint::open(out);
  auto fixture = Checkpoint::open(kFixture);
  EXPECT_TRUE(written.has_index());
  EXPECT_EQ(written.tensor_bytes(), fixture.tensor_bytes());
  for (const auto& location : fixture.tensors()) {
    auto mine = written.find(location.info->name);
    ASSERT_TRUE(mine) << location.info->name;
    EXPECT_EQ(mine->info->shape, location.info->shape);
    EXPECT_EQ(mine->info->dtype, location.info->dtype);
  }
  EXPECT_EQ(read_text_file(out / "config.json"), read_text_file(kFixture / "config.json"));
  EXPECT_TRUE(fs::exists(out / "generation_config.json"));

  // The file holds what the generator produces.
  const std::string name = "model.layers.4.eh_proj.weight";
  std::vector<std::byte> expected(256 * 512 * 2);
  generate_synthetic_tensor(tiny(), name, 0, expected);
  EXPECT_EQ(read_tensor(written, name), expected);

  EXPECT_EQ(error_kind_of([&] { write_synthetic_checkpoint(tiny(), out); }),
            "synth.output_not_empty");
}

TEST(Synth, BytesDoNotDependOnThreadsOrShardingButOnTheSeed) {
  ScratchDirectory scratch("synth");
  auto spec = tiny();
  {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 1);
    write_synthetic_checkpoint(spec, scratch.path() / "one-thread");
  }
  auto small_shards = spec;
  small_shards.max_shard_bytes = 1'000'000;
  write_synthetic_checkpoint(small_shards, scratch.path() / "small-shards");
  write_synthetic_checkpoint(spec, scratch.path() / "again");

  for (const char* name : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", "config.json"})
    EXPECT_EQ(read_text_file(scratch.path() / "one-thread" / name),
              read_text_file(scratch.path() / "again" / name))
        << name;

  auto one_thread = Checkpoint::open(scratch.path() / "one-thread");
  auto sharded = Checkpoint::open(scratch.path() / "small-shards");
  EXPECT_GT(sharded.shards().size(), 15u);
  for (const auto& shard : sharded.shards()) {
    std::uint64_t bytes = 0;
    for (const auto& tensor : shard->tensors()) bytes += tensor.byte_size();
    EXPECT_TRUE(bytes <= 1'000'000 || shard->tensors().size() == 1) << shard->path();
  }
  EXPECT_EQ(sharded.index()["weight_map"].size(), 292u);
  expect_same_tensor_bytes(one_thread, sharded);

  auto reseeded = spec;
  reseeded.seed = 12345;
  write_synthetic_checkpoint(reseeded, scratch.path() / "reseeded");
  auto other = Checkpoint::open(scratch.path() / "reseeded");
  for (const auto& location : one_thread.tensors())
    EXPECT_NE(read_tensor(one_thread, location.info->name), read_tensor(other, location.info->name))
        << location.info->name;
}

TEST(Synth, TensorsLargerThanOneChunkAreStreamedInPieces) {
  // vocab 140000 × hidden 256 BF16 = 71.7 MB per embedding/head, over the 64 MiB chunk.
  ScratchDirectory scratch("synth");
  auto spec = tiny();
  spec.vocab_size = 140000;
  spec.num_hidden_layers = 1;
  spec.num_nextn_predict_layers = 0;
  write_synthetic_checkpoint(spec, scratch.path() / "big");
  auto written = Checkpoint::open(scratch.path() / "big");
  const auto& head = written.at("lm_head.weight");
  ASSERT_EQ(head.info->byte_size(), 140000u * 256 * 2);
  // Its last rows, generated on their own, match the streamed file.
  const std::uint64_t tail_elements = 5000 * 256 + 3;
  const std::uint64_t first = 140000u * 256 - tail_elements;
  std::vector<std::byte> expected(tail_elements * 2), actual(tail_elements * 2);
  generate_synthetic_tensor(spec, "lm_head.weight", first, expected);
  head.shard->read_part(*head.info, first * 2, actual);
  EXPECT_EQ(expected, actual);
}

// ---------------------------------------------------------------------------------------------
// The CLI

// ---------------------------------------------------------------------------------------------
// Token ids

std::map<std::string, std::vector<std::int32_t>> read_token_file(const fs::path& file) {
  SafetensorsFile tokens(file);
  std::map<std::string, std::vector<std::int32_t>> ids;
  for (const auto& info : tokens.tensors()) {
    EXPECT_EQ(info.dtype, DType::I32) << info.name;
    const auto bytes = tokens.read(info);
    auto& values = ids[info.name];
    values.resize(bytes.size() / sizeof(std::int32_t));
    std::memcpy(values.data(), bytes.data(), bytes.size());
  }
  return ids;
}

TEST(Synth, TokensAreSeededIdsSpreadOverTheVocabulary) {
  ScratchDirectory scratch("synth-tokens");
  auto spec = tiny();
  write_synthetic_tokens(spec, scratch.path() / "a.safetensors", 3, 64);
  write_synthetic_tokens(spec, scratch.path() / "b.safetensors", 3, 64);
  spec.seed = 9;
  write_synthetic_tokens(spec, scratch.path() / "c.safetensors", 3, 64);
  EXPECT_EQ(read_text_file(scratch.path() / "a.safetensors"),
            read_text_file(scratch.path() / "b.safetensors"));
  EXPECT_NE(read_text_file(scratch.path() / "a.safetensors"),
            read_text_file(scratch.path() / "c.safetensors"));

  SafetensorsFile file(scratch.path() / "a.safetensors");
  ASSERT_EQ(file.tensors().size(), 2u);
  for (const auto& info : file.tensors()) EXPECT_EQ(info.shape, (Shape{3, 64})) << info.name;
  const auto ids = read_token_file(scratch.path() / "a.safetensors");
  ASSERT_TRUE(ids.contains("calib") && ids.contains("heldout"));
  EXPECT_NE(ids.at("calib"), ids.at("heldout"));
  for (const auto& [name, values] : ids) {
    // 192 draws from 512 ids: ~160 distinct expected; a stuck or narrow generator gives few.
    const std::set<std::int32_t> distinct(values.begin(), values.end());
    EXPECT_GT(distinct.size(), 120u) << name;
    EXPECT_GE(*distinct.begin(), 0) << name;
    EXPECT_LT(*distinct.rbegin(), 512) << name;
    EXPECT_GT(*distinct.rbegin(), 400) << name;  // the top of the vocabulary is reached
  }
  EXPECT_EQ(error_kind_of([&] {
              write_synthetic_tokens(tiny(), scratch.path() / "empty.safetensors", 0, 8);
            }),
            "synth.invalid_tokens");
  EXPECT_FALSE(fs::exists(scratch.path() / "empty.safetensors"));
}

TEST(SynthCli, WritesWhatTheLibraryWrites) {
  ScratchDirectory scratch("synth-cli");
  const fs::path out = scratch.path() / "cli";
  auto result = run_cli(
      "synth --preset tiny --layers 2 --experts 4 --max-shard-size 1MB --seed 7 "
      "--out '" +
      out.string() + "'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("wrote tiny"), std::string::npos) << result.output;

  auto spec = tiny();
  spec.num_hidden_layers = 2;
  spec.n_routed_experts = 4;
  spec.max_shard_bytes = 1'000'000;
  spec.seed = 7;
  write_synthetic_checkpoint(spec, scratch.path() / "library");
  auto from_cli = Checkpoint::open(out);
  EXPECT_EQ(from_cli.config()["num_hidden_layers"], 2);
  EXPECT_EQ(from_cli.config()["n_routed_experts"], 4);
  EXPECT_EQ(from_cli.config()["num_experts_per_tok"], 4);
  EXPECT_EQ(from_cli.shards().size(), Checkpoint::open(scratch.path() / "library").shards().size());
  expect_same_tensor_bytes(from_cli, Checkpoint::open(scratch.path() / "library"));
}

TEST(SynthCli, WritesTokensTheRunnerCalibratesOn) {
  ScratchDirectory scratch("synth-cli");
  const fs::path out = scratch.path() / "model";
  auto result = run_cli("synth --preset tiny --layers 2 --experts 4 --tokens 2x8 --out '" +
                        out.string() + "'");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto ids = read_token_file(out / "tokens.safetensors");
  ASSERT_EQ(ids.at("calib").size(), 16u);
  // The tokens file is no shard of the checkpoint, and calibrate runs on it.
  EXPECT_FALSE(Checkpoint::open(out).find("calib").has_value());
  auto calibrated = run_cli("calibrate '" + out.string() + "' --tokens '" +
                            (out / "tokens.safetensors").string() + ":calib' --all-experts --out '" +
                            (scratch.path() / "stats.qsc").string() + "'");
  EXPECT_EQ(calibrated.exit_code, 0) << calibrated.output;
  EXPECT_NE(calibrated.output.find("on 16 tokens"), std::string::npos) << calibrated.output;

  for (const char* shape : {"2x", "x8", "0x8", "2x8x1", "two"}) {
    const fs::path bad = scratch.path() / "bad";
    auto refused = run_cli(std::string("synth --preset tiny --tokens ") + shape + " --out '" +
                           bad.string() + "'");
    EXPECT_EQ(refused.exit_code, 2) << shape << refused.output;
    EXPECT_NE(refused.output.find("ROWSxSEQ"), std::string::npos) << refused.output;
    EXPECT_FALSE(fs::exists(bad)) << shape;  // refused before any weight is written
  }
}

TEST(SynthCli, RefusesANonEmptyOutputDirectory) {
  ScratchDirectory scratch("synth-cli");
  write_file_atomically(scratch.path() / "keep-me.txt", "precious");
  auto result = run_cli("synth --preset tiny --out '" + scratch.path().string() + "'");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find(scratch.path().string()), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("not empty"), std::string::npos) << result.output;
  EXPECT_EQ(read_text_file(scratch.path() / "keep-me.txt"), "precious");
  EXPECT_FALSE(fs::exists(scratch.path() / "config.json"));
}

TEST(SynthCli, ListsPresetsAndDryRuns) {
  auto list = run_cli("synth --list-presets");
  ASSERT_EQ(list.exit_code, 0) << list.output;
  for (const char* name : {"tiny", "glm5", "glm5-moe-layer", "bench-4g"})
    EXPECT_NE(list.output.find(name), std::string::npos) << name;

  auto dry = run_cli("synth --preset tiny --dry-run");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("292 tensors"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("19041280 bytes"), std::string::npos) << dry.output;

  auto shrunk = run_cli("synth --preset glm5 --layers 2 --experts 4 --dry-run");
  ASSERT_EQ(shrunk.exit_code, 0) << shrunk.output;
  // 2 dense layers (first_k_dense_replace follows --layers down) + one MTP layer with 4 experts.
  EXPECT_NE(shrunk.output.find(std::to_string(3 + 2 * 17 + 14 + 2 + 12 + 3 + 4) + " tensors"),
            std::string::npos)
      << shrunk.output;
}

TEST(SynthCli, BadFlagsExitWithTwo) {
  ScratchDirectory scratch("synth-cli");
  const std::string out = " --out '" + (scratch.path() / "x").string() + "'";
  EXPECT_EQ(run_cli("synth" + out).exit_code, 2);                // no preset
  EXPECT_EQ(run_cli("synth --preset nope" + out).exit_code, 2);  // unknown preset
  EXPECT_EQ(run_cli("synth --preset tiny --max-shard-size 5XB" + out).exit_code, 2);
  EXPECT_EQ(run_cli("synth --preset tiny --experts-per-token 99" + out).exit_code, 2);
  EXPECT_EQ(run_cli("synth --preset tiny").exit_code, 2);  // no --out
  EXPECT_FALSE(fs::exists(scratch.path() / "x"));
}

}  // namespace
}  // namespace qs
