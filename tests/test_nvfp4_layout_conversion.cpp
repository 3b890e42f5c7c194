// NVFP4 modelopt ↔ compressed-tensors conversion: codes and block scales round-trip bit for
// bit, the global scale becomes exactly what the other format's quantizer writes, both
// layouts decode to the same weights, and how often the fp32 reciprocal does not round-trip.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "qs/ckpt/error.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/nvfp4_layout_conversion.h"
#include "test_support.h"

namespace qs {
namespace {

constexpr std::uint64_t kRows = 32, kCols = 64;

// One module's NVFP4 tensors in some layout: codes, block scales, global scale, input scale.
struct Nvfp4Tensors {
  std::vector<std::byte> codes, scales, global, input;
  std::vector<TensorInfo> infos;
};

std::vector<std::byte> float_bytes(float value) {
  std::vector<std::byte> bytes(sizeof(float));
  std::memcpy(bytes.data(), &value, sizeof(float));
  return bytes;
}

float float_of(const std::vector<std::byte>& bytes) {
  float value = 0;
  std::memcpy(&value, bytes.data(), sizeof(float));
  return value;
}

// A random weight quantized the modelopt way (s2 = amax / 2688).
Nvfp4Tensors quantized_modelopt(std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> weight(kRows * kCols);
  for (auto& value : weight) value = normal(generator);
  const fp4::WeightView view{DType::F32, std::as_bytes(std::span(weight)), kRows, kCols};
  const float s2 = fp4::choose_global_scale({&view, 1}, fp4::ScaleMethod::Max,
                                            fp4::Backend::Reference);
  Nvfp4Tensors tensors;
  tensors.codes.resize(kRows * kCols / 2);
  tensors.scales.resize(kRows * kCols / 16);
  fp4::quantize(view, s2, fp4::ScaleMethod::Max,
                {{reinterpret_cast<std::uint8_t*>(tensors.codes.data()), tensors.codes.size()},
                 {reinterpret_cast<std::uint8_t*>(tensors.scales.data()), tensors.scales.size()}},
                fp4::Backend::Reference);
  tensors.global = float_bytes(s2);
  tensors.input = float_bytes(3.5f / 2688.0f);
  return tensors;
}

// Runs the conversion on `in` (with the input scale), returns the converted tensors.
Nvfp4Tensors convert(const Nvfp4Tensors& in, OutputFormat from, OutputFormat to) {
  const bool modelopt = from == OutputFormat::Modelopt;
  std::vector<TensorInfo> infos = {
      {modelopt ? "m.weight" : "m.weight_packed", DType::U8, {kRows, kCols / 2}, 0, 0},
      {"m.weight_scale", DType::F8_E4M3, {kRows, kCols / 16}, 0, 0},
      {modelopt ? "m.weight_scale_2" : "m.weight_global_scale", DType::F32,
       modelopt ? Shape{} : Shape{1}, 0, 0},
      {modelopt ? "m.input_scale" : "m.input_global_scale", DType::F32,
       modelopt ? Shape{} : Shape{1}, 0, 0}};
  const std::vector<SourceTensor> sources = {{&infos[0], in.codes},
                                             {&infos[1], in.scales},
                                             {&infos[2], in.global},
                                             {&infos[3], in.input}};
  Nvfp4Tensors out;
  out.codes.resize(kRows * kCols / 2);
  out.scales.resize(kRows * kCols / 16);
  out.global.resize(4);
  out.input.resize(4);
  const std::vector<std::span<std::byte>> outputs = {out.codes, out.scales, out.global, out.input};
  make_nvfp4_layout_conversion(from, to, true)->run(sources, outputs);
  return out;
}

std::vector<float> decode(const Nvfp4Tensors& tensors, float s2) {
  std::vector<float> values(kRows * kCols);
  fp4::dequantize({reinterpret_cast<const std::uint8_t*>(tensors.codes.data()), tensors.codes.size()},
                  {reinterpret_cast<const std::uint8_t*>(tensors.scales.data()),
                   tensors.scales.size()},
                  s2, kRows, kCols, values);
  return values;
}

TEST(Nvfp4LayoutConversion, CodesAndBlockScalesRoundTripBitForBit) {
  for (std::uint32_t seed = 0; seed < 20; ++seed) {
    const auto modelopt = quantized_modelopt(seed);
    const auto ct = convert(modelopt, OutputFormat::Modelopt, OutputFormat::CompressedTensors);
    EXPECT_EQ(ct.codes, modelopt.codes);
    EXPECT_EQ(ct.scales, modelopt.scales);
    // Exactly what the compressed-tensors quantizer stores for this s2 (1.0f / s2).
    EXPECT_EQ(float_of(ct.global), 1.0f / float_of(modelopt.global));
    EXPECT_EQ(float_of(ct.input), 1.0f / float_of(modelopt.input));
    const auto back = convert(ct, OutputFormat::CompressedTensors, OutputFormat::Modelopt);
    EXPECT_EQ(back.codes, modelopt.codes);
    EXPECT_EQ(back.scales, modelopt.scales);
    // The global scale may move by one ulp (see the exhaustive count below), never more.
    const auto s2 = std::bit_cast<std::uint32_t>(float_of(modelopt.global));
    const auto s2_back = std::bit_cast<std::uint32_t>(float_of(back.global));
    EXPECT_LE(s2 > s2_back ? s2 - s2_back : s2_back - s2, 1u);
  }
}

TEST(Nvfp4LayoutConversion, BothLayoutsDecodeToTheSameWeights) {
  std::size_t exact = 0, total = 0;
  for (std::uint32_t seed = 0; seed < 20; ++seed) {
    const auto modelopt = quantized_modelopt(seed);
    const auto ct = convert(modelopt, OutputFormat::Modelopt, OutputFormat::CompressedTensors);
    const float s2 = float_of(modelopt.global);
    const auto reference = decode(modelopt, s2);
    // A compressed-tensors reader multiplies by 1 / global: the same s2 whenever the
    // reciprocal round-trips, else within one ulp per weight.
    const auto converted = decode(ct, 1.0f / float_of(ct.global));
    const bool same = converted == reference;
    exact += same;
    ++total;
    for (std::size_t i = 0; i < reference.size(); ++i)
      EXPECT_NEAR(converted[i], reference[i], std::abs(reference[i]) * 1.2e-7f) << i;
  }
  std::printf("decoded bit-identical in %zu of %zu random modules\n", exact, total);
}

// Every fp32 in [2^-40, 2^10) (global scales of real weights lie within it): how many
// 1/(1/x) differ from x, and by how much.
TEST(Nvfp4LayoutConversion, ReciprocalRoundTripCountedOverEveryFloat) {
  const std::uint32_t first = std::bit_cast<std::uint32_t>(std::ldexp(1.0f, -40));
  const std::uint32_t last = std::bit_cast<std::uint32_t>(std::ldexp(1.0f, 10));
  std::uint64_t off = 0, far = 0;
  for (std::uint32_t bits = first; bits < last; ++bits) {
    const float x = std::bit_cast<float>(bits);
    const volatile float inverse = 1.0f / x;  // two roundings, as two conversions make them
    const std::uint32_t back = std::bit_cast<std::uint32_t>(1.0f / inverse);
    off += back != bits;
    far += (back > bits ? back - bits : bits - back) > 1;
  }
  const double fraction = static_cast<double>(off) / (last - first);
  std::printf("1/(1/x) != x for %llu of %u floats (%.2f%%), more than one ulp: %llu\n",
              static_cast<unsigned long long>(off), last - first, 100.0 * fraction,
              static_cast<unsigned long long>(far));
  EXPECT_EQ(far, 0u);
  EXPECT_GT(off, 0u);  // it does not always round-trip: the note and header say so
}

TEST(Nvfp4LayoutConversion, RefusesBadScalesAndTensors) {
  auto modelopt = quantized_modelopt(1);
  for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
    auto broken = modelopt;
    broken.global = float_bytes(bad);
    EXPECT_EQ(testing::error_kind_of([&] {
                convert(broken, OutputFormat::Modelopt, OutputFormat::CompressedTensors);
              }),
              "nvfp4.bad_global_scale")
        << bad;
  }
  auto short_codes = modelopt;
  short_codes.codes.pop_back();
  EXPECT_EQ(testing::error_kind_of([&] {
              convert(short_codes, OutputFormat::Modelopt, OutputFormat::CompressedTensors);
            }),
            "nvfp4.layout_mismatch");
}

}  // namespace
}  // namespace qs
