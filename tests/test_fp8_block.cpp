// FP8 block-scaled quantization (DeepSeek-V3's weight + weight_scale_inv): the conventions of
// fp8_block.h on hard values (ties, all-zero tiles, partial edge tiles, subnormals, ±Inf,
// NaN, −0.0), decoding as DeepSeek's weight_dequant does, and the CPU and CUDA backends held
// to the scalar reference bit for bit.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/fp8_block_quantizer.h"

namespace qs::fp8 {
namespace {

struct Quantized {
  std::vector<std::uint8_t> codes;
  std::vector<float> scales;
  Fp8View view(std::uint64_t rows, std::uint64_t cols) const { return {codes, scales, rows, cols}; }
};

WeightView f32_view(const std::vector<float>& values, std::uint64_t rows, std::uint64_t cols) {
  return {DType::F32, std::as_bytes(std::span(values)), rows, cols};
}

Quantized run(const WeightView& weight, Backend backend) {
  Quantized out{std::vector<std::uint8_t>(weight.rows * weight.cols),
                std::vector<float>(scale_rows(weight.rows) * scale_cols(weight.cols))};
  quantize(weight, {out.codes, out.scales}, backend);
  return out;
}

std::vector<std::uint32_t> bits_of(const std::vector<float>& values) {
  std::vector<std::uint32_t> bits;
  for (float value : values) bits.push_back(f32_to_bits(value));
  return bits;
}

// Gaussian weights with outlier columns, tiles of tiny values (subnormal E4M3 codes), a
// zero tile and the hard values sprinkled in.
std::vector<float> hard_matrix(std::uint64_t rows, std::uint64_t cols, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(rows * cols);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t c = 0; c < cols; ++c) {
      float value = normal(generator);
      if (c % 97 == 5) value *= 30.0f;
      if (c / kTileCols == 1) value *= 1e-30f;  // tiny tile: scale near the f32 floor
      if (r / kTileRows == 1 && c / kTileCols == 0) value = 0.0f;  // an all-zero tile
      values[r * cols + c] = value;
    }
  values[3] = -0.0f;
  values[4] = 1e-42f;  // an f32 subnormal
  return values;
}

TEST(Fp8Block, ScaleIsAmaxOver448AndCodesRoundToNearestEven) {
  // One tile with amax 448: scale 1, so the codes are the E4M3 rounding of the values
  // themselves. 17 lies halfway between 16 and 18 and goes to the even mantissa (16);
  // 19 between 18 and 20 goes to 20; 0.0009765625 (2^-10) is half the smallest subnormal
  // 2^-9 and ties to zero; 464 is past 448 by half an ulp and saturates to 448.
  std::vector<float> values = {448.0f,        17.0f,         19.0f, -17.0f,
                               0.0009765625f, 0.0029296875f, -0.0f, 1.0f};
  const auto out = run(f32_view(values, 1, values.size()), Backend::Reference);
  ASSERT_EQ(out.scales.size(), 1u);
  EXPECT_EQ(out.scales[0], 1.0f);
  const std::vector<std::uint8_t> expected = {0x7E, f32_to_e4m3_satfinite(16.0f),
                                              f32_to_e4m3_satfinite(20.0f),
                                              f32_to_e4m3_satfinite(-16.0f), 0x00,
                                              // 3·2^-10 = 1.5 subnormal steps: ties to 2 (even)
                                              0x02, 0x80, 0x38};
  EXPECT_EQ(out.codes, expected);
}

TEST(Fp8Block, ScaleFollowsTheTileAmaxExactly) {
  std::vector<float> values = {0.5f, -3.0f, 0.25f, 1e-3f};
  const auto out = run(f32_view(values, 2, 2), Backend::Reference);
  EXPECT_EQ(f32_to_bits(out.scales[0]), f32_to_bits(3.0f / 448.0f));
  EXPECT_EQ(out.codes[1], 0xFE);  // −amax → −448
  // Every code decodes to within half an E4M3 ulp of the value.
  std::vector<float> decoded(values.size());
  dequantize(out.view(2, 2), decoded, Backend::Reference);
  for (std::size_t i = 0; i < values.size(); ++i)
    EXPECT_NEAR(decoded[i], values[i], std::fabs(values[i]) / 16 + 3.0f / 448 / 512) << i;
}

TEST(Fp8Block, ZeroTilesGetScaleOneAndSubnormalTilesTheSmallestNormal) {
  std::vector<float> zeros(4, 0.0f);
  zeros[2] = -0.0f;
  auto out = run(f32_view(zeros, 2, 2), Backend::Reference);
  EXPECT_EQ(out.scales[0], kZeroTileScale);
  EXPECT_EQ(out.codes, (std::vector<std::uint8_t>{0x00, 0x00, 0x80, 0x00}));

  // amax 1e-42 (an f32 subnormal): amax/448 would be subnormal, so 2^-126 instead, and the
  // codes are the value over it (finite, tiny: zero).
  std::vector<float> tiny = {1e-42f, -1e-42f};
  out = run(f32_view(tiny, 1, 2), Backend::Reference);
  EXPECT_EQ(out.scales[0], kSmallestScale);
  EXPECT_EQ(out.codes, (std::vector<std::uint8_t>{0x00, 0x80}));

  // amax 2^-120: the scale 2^-120/448 is below 2^-126 too.
  std::vector<float> small = {std::ldexp(1.0f, -120)};
  out = run(f32_view(small, 1, 1), Backend::Reference);
  EXPECT_EQ(out.scales[0], kSmallestScale);
  EXPECT_EQ(out.codes[0], f32_to_e4m3_satfinite(64.0f));
}

TEST(Fp8Block, NonFiniteValuesDoNotSetTheScale) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> values = {2.0f, inf, -inf, nan, -nan, 1.0f};
  const auto out = run(f32_view(values, 1, values.size()), Backend::Reference);
  EXPECT_EQ(f32_to_bits(out.scales[0]), f32_to_bits(2.0f / 448.0f));
  EXPECT_EQ(out.codes[0], 0x7E);
  EXPECT_EQ(out.codes[1], 0x7E);  // +Inf saturates
  EXPECT_EQ(out.codes[2], 0xFE);
  EXPECT_EQ(out.codes[3] & 0x7F, 0x7F);  // NaN stays NaN, with its sign
  EXPECT_EQ(out.codes[4], 0xFF);
}

TEST(Fp8Block, PartialEdgeTilesHaveTheirOwnScales) {
  // 130 × 257: tiles of 128/2 rows and 128/128/1 columns, each with a distinct amax.
  const std::uint64_t rows = 130, cols = 257;
  std::vector<float> values(rows * cols, 0.0f);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t c = 0; c < cols; ++c)
      values[r * cols + c] = static_cast<float>(1 + (r / 128) * 3 + c / 128) * ((r + c) % 7) / 6.0f;
  const auto out = run(f32_view(values, rows, cols), Backend::Reference);
  ASSERT_EQ(out.scales.size(), 2u * 3u);
  for (std::uint64_t tile_row = 0; tile_row < 2; ++tile_row)
    for (std::uint64_t tile_column = 0; tile_column < 3; ++tile_column) {
      float amax = 0.0f;
      for (std::uint64_t r = tile_row * 128; r < std::min(rows, tile_row * 128 + 128); ++r)
        for (std::uint64_t c = tile_column * 128; c < std::min(cols, tile_column * 128 + 128); ++c)
          amax = std::max(amax, std::fabs(values[r * cols + c]));
      EXPECT_EQ(out.scales[tile_row * 3 + tile_column], amax / 448.0f) << tile_row << tile_column;
    }
}

TEST(Fp8Block, DecodingIsCodeTimesScaleThenBf16) {
  // Every code under an awkward scale: the product rounds in f32, then to BF16 (ties even).
  std::vector<std::uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[i] = static_cast<std::uint8_t>(i);
  const std::vector<float> scales = {0.0123456f, 3.3e-5f};
  const Fp8View stored{codes, scales, 1, 256};  // two column blocks
  for (Backend backend : {Backend::Reference, Backend::Cpu}) {
    std::vector<float> values(256);
    std::vector<std::uint16_t> bf16(256);
    dequantize(stored, values, backend);
    dequantize_to_bf16(stored, bf16, backend);
    for (int i = 0; i < 256; ++i) {
      const float expected = e4m3_to_f32(static_cast<std::uint8_t>(i)) * scales[i / 128];
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(values[i])) << i;
      } else {
        EXPECT_EQ(f32_to_bits(values[i]), f32_to_bits(expected)) << i;
      }
      EXPECT_EQ(bf16[i], f32_to_bf16(expected)) << i;
    }
  }
}

TEST(Fp8Block, RoundTripErrorIsWithinHalfAnUlp) {
  const std::uint64_t rows = 256, cols = 384;
  const auto values = hard_matrix(rows, cols, 7);
  const auto weight = f32_view(values, rows, cols);
  const auto out = run(weight, Backend::Cpu);
  std::vector<float> decoded(values.size());
  dequantize(out.view(rows, cols), decoded);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float scale = out.scales[(i / cols / 128) * 3 + (i % cols) / 128];
    // Half an ulp of E4M3 (3 mantissa bits) relative, or half the smallest subnormal step.
    EXPECT_LE(std::fabs(decoded[i] - values[i]),
              std::max(std::fabs(values[i]) / 16, scale / 1024) * 1.0001f)
        << i;
  }
  const auto energy = error_energy(weight, out.view(rows, cols));
  EXPECT_GT(energy.signal, 0.0);
  EXPECT_LT(energy.error, energy.signal * 1e-3);  // FP8: ~30 dB and more
}

class Fp8BlockBackends : public ::testing::TestWithParam<DType> {};

std::vector<std::byte> stored_as(DType dtype, const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * dtype_bits(dtype) / 8);
  encode_from_f32(dtype, values, bytes);
  return bytes;
}

TEST_P(Fp8BlockBackends, CpuEqualsReferenceBitForBit) {
  for (auto [rows, cols] : {std::pair<std::uint64_t, std::uint64_t>{300, 333},
                            {128, 128},
                            {1, 5},
                            {257, 129},
                            {0, 0}}) {
    auto values =
        rows ? hard_matrix(rows, cols, static_cast<unsigned>(rows + cols)) : std::vector<float>{};
    const auto bytes = stored_as(GetParam(), values);
    const WeightView weight{GetParam(), bytes, rows, cols};
    const auto reference = run(weight, Backend::Reference);
    const auto cpu = run(weight, Backend::Cpu);
    EXPECT_EQ(cpu.codes, reference.codes) << rows << "x" << cols;
    EXPECT_EQ(bits_of(cpu.scales), bits_of(reference.scales)) << rows << "x" << cols;
  }
}

TEST_P(Fp8BlockBackends, CudaEqualsReferenceBitForBit) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  for (auto [rows, cols] : {std::pair<std::uint64_t, std::uint64_t>{300, 333},
                            {128, 128},
                            {1, 5},
                            {257, 129},
                            {1024, 2048}}) {
    auto values = hard_matrix(rows, cols, static_cast<unsigned>(rows * 3 + cols));
    const float inf = std::numeric_limits<float>::infinity();
    values[1] = inf;
    values[2] = -std::numeric_limits<float>::quiet_NaN();
    values[rows * cols - 1] = -inf;
    const auto bytes = stored_as(GetParam(), values);
    const WeightView weight{GetParam(), bytes, rows, cols};
    const auto reference = run(weight, Backend::Reference);
    const auto device = run(weight, Backend::Cuda);
    EXPECT_EQ(device.codes, reference.codes) << rows << "x" << cols;
    EXPECT_EQ(bits_of(device.scales), bits_of(reference.scales)) << rows << "x" << cols;
  }
}

INSTANTIATE_TEST_SUITE_P(SourceDtypes, Fp8BlockBackends,
                         ::testing::Values(DType::BF16, DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Fp8Block, CpuHandlesInfAndNanLikeTheReference) {
  std::vector<float> values = hard_matrix(130, 140, 3);
  values[0] = std::numeric_limits<float>::infinity();
  values[200] = -std::numeric_limits<float>::quiet_NaN();
  const auto weight = f32_view(values, 130, 140);
  const auto reference = run(weight, Backend::Reference);
  const auto cpu = run(weight, Backend::Cpu);
  EXPECT_EQ(cpu.codes, reference.codes);
  EXPECT_EQ(bits_of(cpu.scales), bits_of(reference.scales));
}

TEST(Fp8Block, RejectsOtherDtypesAndWrongBuffers) {
  std::vector<std::byte> bytes(4);
  const WeightView int_weight{DType::I32, bytes, 1, 1};
  std::vector<std::uint8_t> codes(1);
  std::vector<float> scales(1);
  try {
    quantize(int_weight, {codes, scales}, Backend::Cpu);
    FAIL() << "I32 accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "fp8.dtype");
  }
  std::vector<float> values(2);
  std::vector<float> no_scales;
  EXPECT_THROW(quantize(f32_view(values, 1, 2), {codes, no_scales}, Backend::Cpu), Error);
}

}  // namespace
}  // namespace qs::fp8
