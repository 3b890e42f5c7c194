// Calibration statistics: the store round-trips, and `calibrate` sums exactly the inputs each
// Linear saw (checked against XᵀX computed here from the model's own layer inputs).

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <zstd.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/calibration.h"
#include "qs/run/language_model.h"
#include "qs/run/tensor_ops.h"
#include "test_support.h"

namespace qs::run {
namespace {

using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();

TEST(CalibrationStore, RoundTripsEntriesSharedEntriesAndRouting) {
  ScratchDirectory scratch("calibration-store");
  const auto path = scratch.path() / "stats.qs";
  CalibrationStoreWriter writer(path, {"model", 12, true, "f64"});
  writer.add("a.weightless", 2, 12, {1.0, 2.0, 2.0, 5.0});
  writer.add_shared("b", "a.weightless", 12);
  writer.set_routing(3, {4, 0, 8});
  writer.commit();
  const auto store = CalibrationStore::open(path);
  EXPECT_EQ(store.info().token_rows, 12u);
  EXPECT_TRUE(store.info().all_experts);
  EXPECT_EQ(store.second_moments("b"), (std::vector<double>{1.0, 2.0, 2.0, 5.0}));
  EXPECT_EQ(store.find("b")->shared_with, "a.weightless");
  EXPECT_EQ(store.routing().at(3), (std::vector<std::uint64_t>{4, 0, 8}));
  EXPECT_EQ(testing::error_kind_of([&] { store.second_moments("c"); }),
            "calibration.missing_module");
  std::ofstream(scratch.path() / "junk.qs") << "not a calibration file at all";
  EXPECT_EQ(testing::error_kind_of([&] { CalibrationStore::open(scratch.path() / "junk.qs"); }),
            "calibration.invalid");
}

// A 3×3 symmetric matrix whose entries f32 cannot hold exactly.
const std::vector<double> kSymmetric{1.0 / 3.0, 0.1, 2.0, 0.1, 5.0, -0.7, 2.0, -0.7, 1e-9};

TEST(CalibrationStore, StoresTheUpperTriangleInEitherPrecision) {
  ScratchDirectory scratch("calibration-precision");
  for (const auto precision : {StatisticsPrecision::F64, StatisticsPrecision::F32}) {
    const auto path = scratch.path() / fmt::format("{}.qs", statistics_precision_name(precision));
    CalibrationInfo info{"model", 9, false, "f64"};
    info.precision = precision;
    CalibrationStoreWriter writer(path, info);
    writer.add("m", 3, 9, kSymmetric, 2.5);
    writer.commit();
    const auto store = CalibrationStore::open(path);
    EXPECT_EQ(store.info().precision, precision);
    EXPECT_EQ(store.info().version, 2u);
    EXPECT_EQ(store.find("m")->input_amax, 2.5);
    std::vector<double> expected = kSymmetric;
    if (precision == StatisticsPrecision::F32)
      for (double& value : expected) value = static_cast<float>(value);
    EXPECT_EQ(store.second_moments("m"), expected);
  }
  EXPECT_EQ(parse_statistics_precision("f32"), StatisticsPrecision::F32);
  EXPECT_FALSE(parse_statistics_precision("bf16"));
}

// The format before the packed upper triangle (version 1): full K·K f64 frames. Written here
// byte by byte as that writer did, so readers keep accepting files users already have.
TEST(CalibrationStore, ReadsVersionOneFiles) {
  ScratchDirectory scratch("calibration-version-one");
  const auto path = scratch.path() / "old.qs";
  const std::string magic = "QSCALIB1";
  std::vector<char> frame(ZSTD_compressBound(kSymmetric.size() * sizeof(double)));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), kSymmetric.data(),
                             kSymmetric.size() * sizeof(double), 3));
  nlohmann::json index = {
      {"format", "quantsmith-calibration"}, {"version", 1}, {"model", "old"},
      {"token_rows", 4}, {"all_experts", false}, {"accumulation", "f64"},
      {"entries",
       {{{"module", "m"}, {"in_features", 3}, {"tokens", 4}, {"shared_with", ""},
         {"offset", 8}, {"compressed_bytes", frame.size()}},
        {{"module", "n"}, {"in_features", 3}, {"tokens", 4}, {"shared_with", "m"},
         {"offset", 0}, {"compressed_bytes", 0}}}},
      {"routing", {{"1", {3, 1}}}}};
  const std::string text = index.dump();
  const std::uint64_t length = text.size();
  {
    std::ofstream out(path, std::ios::binary);
    out << magic;
    out.write(frame.data(), static_cast<std::streamsize>(frame.size()));
    out << text;
    out.write(reinterpret_cast<const char*>(&length), sizeof(length));
  }
  const auto store = CalibrationStore::open(path);
  EXPECT_EQ(store.info().version, 1u);
  EXPECT_EQ(store.second_moments("n"), kSymmetric);
  EXPECT_EQ(store.find("m")->input_amax, 0.0);  // version 1 files before input_amax
  EXPECT_EQ(store.routing().at(1), (std::vector<std::uint64_t>{3, 1}));
}

// A damaged file is refused naming it: cut short, or a frame's bytes overwritten.
TEST(CalibrationStore, RefusesTruncatedAndCorruptedFilesNamingThem) {
  ScratchDirectory scratch("calibration-damaged");
  const auto path = scratch.path() / "stats.qs";
  CalibrationStoreWriter writer(path, {"model", 9, false, "f64"});
  writer.add("m", 3, 9, kSymmetric);
  writer.commit();
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto error_for = [&](const std::string& content, const std::function<void(const std::filesystem::path&)>& use) {
    const auto damaged = scratch.path() / "damaged.qs";
    std::ofstream(damaged, std::ios::binary | std::ios::trunc) << content;
    try {
      use(damaged);
    } catch (const Error& error) {
      EXPECT_EQ(error.file(), damaged.string());
      return error.kind();
    }
    return std::string("no error");
  };
  auto open = [](const std::filesystem::path& file) { CalibrationStore::open(file); };
  auto read = [](const std::filesystem::path& file) {
    CalibrationStore::open(file).second_moments("m");
  };
  // Cut in the middle of the index, and after the magic.
  EXPECT_EQ(error_for(bytes.substr(0, bytes.size() - 20), open), "calibration.invalid");
  EXPECT_EQ(error_for(bytes.substr(0, 12), open), "calibration.invalid");
  // The index kept whole but the frames cut away: the entry points outside the file.
  const std::uint64_t frame_bytes = CalibrationStore::open(path).find("m")->compressed_bytes;
  EXPECT_EQ(error_for(bytes.substr(0, 8) + bytes.substr(8 + frame_bytes), open),
            "calibration.invalid");
  // A frame's payload overwritten.
  std::string corrupted = bytes;
  for (std::uint64_t i = 8; i < 8 + frame_bytes; ++i) corrupted[i] = static_cast<char>(0x5a);
  EXPECT_EQ(error_for(corrupted, read), "calibration.invalid");
}

class Calibrate : public ::testing::Test {
 protected:
  void SetUp() override { tokens_ = read_token_batch(kModel / "tokens.safetensors", "calib", 2); }
  Checkpoint checkpoint_ = Checkpoint::open(kModel);
  TokenBatch tokens_;
  ScratchDirectory scratch_{"calibrate"};
};

TEST_F(Calibrate, SumsExactlyWhatEachLinearSaw) {
  calibrate(checkpoint_, tokens_, scratch_.path() / "stats.qs", {});
  const auto store = CalibrationStore::open(scratch_.path() / "stats.qs");
  const std::uint64_t rows = tokens_.rows * tokens_.seq;
  // Layer 0's q_a_proj sees input_layernorm(embeddings).
  const LanguageModel model(checkpoint_);
  auto hidden = model.embed(tokens_.ids, tokens_.rows, tokens_.seq);
  rms_norm(hidden.values, WeightLoader(checkpoint_).vector("model.layers.0.input_layernorm.weight"),
           1e-5f);
  const std::uint64_t k = 256;
  const auto stored = store.second_moments("model.layers.0.self_attn.q_a_proj");
  ASSERT_EQ(stored.size(), k * k);
  double worst = 0.0;
  for (std::uint64_t i = 0; i < k; i += 7)
    for (std::uint64_t j = 0; j < k; j += 5) {
      double sum = 0.0;
      for (std::uint64_t r = 0; r < rows; ++r)
        sum += static_cast<double>(hidden.values[r * k + i]) * hidden.values[r * k + j];
      worst = std::max(worst, std::fabs(sum - stored[i * k + j]) / (std::fabs(sum) + 1e-30));
    }
  EXPECT_LT(worst, 1e-12);
  EXPECT_EQ(store.find("model.layers.0.self_attn.q_a_proj")->tokens, rows);
  EXPECT_TRUE(store.find("model.layers.2.self_attn.indexer.weights_proj"));
  EXPECT_TRUE(store.find("model.layers.4.eh_proj"));  // the MTP layer
  // Every token picks 4 experts; each expert's statistics count the tokens it got.
  for (const auto& [layer, counts] : store.routing()) {
    std::uint64_t total = 0;
    for (std::size_t e = 0; e < counts.size(); ++e) {
      total += counts[e];
      const auto* entry =
          store.find(fmt::format("model.layers.{}.mlp.experts.{}.down_proj", layer, e));
      EXPECT_EQ(entry ? entry->tokens : 0, counts[e]) << layer << " " << e;
    }
    EXPECT_EQ(total, (layer == 4 ? tokens_.rows * (tokens_.seq - 1) : rows) * 4) << layer;
  }
}

TEST_F(Calibrate, AllExpertsStoresTheSharedGateUpInputOnce) {
  CalibrationOptions options;
  options.all_experts = true;
  calibrate(checkpoint_, tokens_, scratch_.path() / "all.qs", options);
  const auto store = CalibrationStore::open(scratch_.path() / "all.qs");
  const std::uint64_t rows = tokens_.rows * tokens_.seq;
  const auto* gate = store.find("model.layers.2.mlp.experts.9.gate_proj");
  ASSERT_TRUE(gate);
  EXPECT_EQ(gate->shared_with, "model.layers.2.mlp.experts.gate_up_input");
  EXPECT_EQ(gate->tokens, rows);
  EXPECT_EQ(store.find("model.layers.2.mlp.experts.9.down_proj")->tokens, rows);
  // The shared input is the shared expert's input too.
  EXPECT_EQ(store.second_moments("model.layers.2.mlp.experts.9.up_proj"),
            store.second_moments("model.layers.2.mlp.shared_experts.gate_proj"));
  EXPECT_EQ(store.routing().at(2).size(), 16u);
}

}  // namespace
}  // namespace qs::run
