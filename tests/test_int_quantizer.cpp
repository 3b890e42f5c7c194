// Integer (INT8 / INT4) round-to-nearest quantization: hand-computed compressed-tensors
// values (bf16-rounded quotients, signed zero points, the 7.5 / 127.5 divisors), zero groups,
// the pack-quantized bit layout, and CPU and CUDA held to the reference bit for bit.

#include <gtest/gtest.h>
#include <tbb/task_arena.h>

#include <cstring>
#include <random>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/int_quantizer.h"

namespace qs::intq {
namespace {

std::vector<std::uint16_t> to_bf16(const std::vector<float>& values) {
  std::vector<std::uint16_t> codes(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) codes[i] = f32_to_bf16(values[i]);
  return codes;
}

WeightView bf16_view(const std::vector<std::uint16_t>& codes, std::uint64_t rows) {
  return {DType::BF16, std::as_bytes(std::span(codes)), rows, codes.size() / rows};
}

IntScheme scheme(int bits, bool symmetric, std::int64_t group, Observer observer = Observer::MinMax) {
  return {{bits, symmetric}, group, observer};
}

std::vector<float> realistic_matrix(std::uint64_t rows, std::uint64_t cols, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(rows * cols);
  for (std::uint64_t i = 0; i < values.size(); ++i) {
    values[i] = normal(generator);
    if (i % 61 == 7) values[i] *= 15.0f;                  // outliers
    if ((i / 32) % 13 == 4) values[i] = std::fabs(values[i]);  // one-sided groups
    if ((i / 32) % 17 == 9) values[i] = 0.0f;                  // zero groups (g32)
  }
  return values;
}

TEST(IntQuantizer, SymmetricInt8RoundsTheQuotientToBf16) {
  // amax 96 → s = bf16(96/127.5) = 0.75390625. 76.5/s = 101.47 rounds to bf16 101.5 and then
  // to the even code 102; an f32 quotient would give 101 (docs/formats/compressed-tensors.md,
  // "Arithmetic dtype").
  std::vector<float> group(128, 0.0f);
  group[0] = 96.0f;
  group[1] = 76.5f;
  group[2] = -0.0f;
  const auto codes = to_bf16(group);
  IntQuantized out;
  quantize(bf16_view(codes, 1), scheme(8, true, 128), out, Backend::Reference);
  EXPECT_EQ(out.scales[0], 0.75390625f);
  EXPECT_EQ(out.zeros[0], 0);
  EXPECT_EQ(out.codes[0], 127);  // 127.34 → bf16 127.5 → clamped to 127
  EXPECT_EQ(out.codes[1], 102);
  EXPECT_EQ(out.codes[2], 0);
}

TEST(IntQuantizer, SymmetricInt4UsesTheSevenAndAHalfDivisor) {
  std::vector<float> group(128, 0.0f);
  group[0] = -7.5f;  // s = 1: -7.5 rounds half to even → -8
  group[1] = 7.5f;   // clamped to 7
  group[2] = 2.5f;   // tie → 2
  group[3] = 3.5f;   // tie → 4
  group[4] = -0.5f;  // tie → -0 → 0
  const auto codes = to_bf16(group);
  IntQuantized out;
  quantize(bf16_view(codes, 1), scheme(4, true, 128), out, Backend::Reference);
  EXPECT_EQ(out.scales[0], 1.0f);
  EXPECT_EQ(out.codes[0], -8);
  EXPECT_EQ(out.codes[1], 7);
  EXPECT_EQ(out.codes[2], 2);
  EXPECT_EQ(out.codes[3], 4);
  EXPECT_EQ(out.codes[4], 0);
}

TEST(IntQuantizer, AsymmetricInt4HasASignedZeroPoint) {
  // lo -1, hi 2: s = bf16(3/15) = 0.2001953125; zp = -8 - bf16(-1/s) = -8 + 5 = -3.
  std::vector<float> group(128, 0.0f);
  group[0] = -1.0f;
  group[1] = 2.0f;
  const auto codes = to_bf16(group);
  IntQuantized out;
  quantize(bf16_view(codes, 1), scheme(4, false, 128), out, Backend::Reference);
  EXPECT_EQ(out.scales[0], 0.2001953125f);
  EXPECT_EQ(out.zeros[0], -3);
  EXPECT_EQ(out.codes[0], -8);
  EXPECT_EQ(out.codes[1], 7);
  EXPECT_EQ(out.codes[2], -3);  // 0 is exactly the zero point
  std::vector<float> decoded(128);
  dequantize(out, decoded);
  EXPECT_EQ(decoded[0], -1.0f);  // bf16((−8+3)·s) = bf16(−1.00098) = −1
  EXPECT_EQ(decoded[1], 2.0f);
  EXPECT_EQ(decoded[2], 0.0f);
}

TEST(IntQuantizer, AllZeroGroupGetsTheDtypeEpsilon) {
  const std::vector<std::uint16_t> codes(2 * 32, 0);
  for (bool symmetric : {true, false}) {
    IntQuantized out;
    const auto energy =
        quantize(bf16_view(codes, 2), scheme(4, symmetric, 32), out, Backend::Reference);
    for (float s : out.scales) EXPECT_EQ(s, 0.0078125f);
    for (auto z : out.zeros) EXPECT_EQ(z, 0);
    for (auto q : out.codes) EXPECT_EQ(q, 0);
    EXPECT_EQ(energy.error, 0.0);
  }
}

TEST(IntQuantizer, OneSidedGroupsStillRepresentZero) {
  std::vector<float> group(32);
  for (int i = 0; i < 32; ++i) group[i] = 1.0f + static_cast<float>(i) / 8.0f;  // all > 0
  const auto codes = to_bf16(group);
  IntQuantized out;
  quantize(bf16_view(codes, 1), scheme(4, false, 32), out, Backend::Reference);
  EXPECT_EQ(out.zeros[0], -8);  // lo is clamped to 0, which maps to q_min
  std::vector<float> decoded(32);
  dequantize(out, decoded);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(decoded[i], group[i], out.scales[0] / 2 + 1e-2);
}

TEST(IntQuantizer, GroupSizeMustDivideTheColumns) {
  const std::vector<std::uint16_t> codes(2 * 96, 0);
  IntQuantized out;
  try {
    quantize(bf16_view(codes, 2), scheme(4, false, 128), out, Backend::Cpu);
    FAIL() << "expected int.group_size";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "int.group_size");
  }
  // Channel-wise takes any width.
  EXPECT_NO_THROW(quantize(bf16_view(codes, 2), scheme(8, true, kChannel), out, Backend::Cpu));
  EXPECT_EQ(out.scales.size(), 2u);
}

TEST(IntQuantizer, MseObserverNeverLosesToMinMax) {
  const auto values = realistic_matrix(64, 256, 3);
  const auto codes = to_bf16(values);
  for (int bits : {4, 8})
    for (bool symmetric : {true, false}) {
      IntQuantized minmax, mse;
      const auto a = quantize(bf16_view(codes, 64), scheme(bits, symmetric, 32), minmax, Backend::Cpu);
      const auto b = quantize(bf16_view(codes, 64), scheme(bits, symmetric, 32, Observer::Mse), mse,
                              Backend::Cpu);
      EXPECT_LE(b.error, a.error) << bits << " bits";
      if (bits == 4) {
        EXPECT_LT(b.error, 0.98 * a.error) << "clipping should help int4";
      }
    }
}

TEST(IntQuantizer, PackedLayoutPutsElementZeroInTheLowBits) {
  IntQuantized quantized(8, 8, 1, DType::BF16);
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) quantized.codes[r * 8 + c] = static_cast<std::int8_t>(c - 8);
    quantized.scales[r] = 0.5f;
    quantized.zeros[r] = static_cast<std::int8_t>(r - 8);
  }
  const auto shapes = packed_shapes(8, 8, 4);
  ASSERT_EQ(shapes.words_per_row, 1u);
  ASSERT_EQ(shapes.zero_point_rows, 1u);
  std::vector<std::int32_t> words(8), zero_words(1);
  std::vector<std::uint16_t> scales(8);
  pack(quantized, 4, std::as_writable_bytes(std::span(words)), std::as_writable_bytes(std::span(scales)),
       std::as_writable_bytes(std::span(zero_words)));
  for (int r = 0; r < 8; ++r) EXPECT_EQ(static_cast<std::uint32_t>(words[r]), 0x76543210u);
  EXPECT_EQ(static_cast<std::uint32_t>(zero_words[0]), 0x76543210u);  // along the rows
  EXPECT_EQ(scales[0], 0x3F00);                                       // bf16 0.5

  // int8: four codes per word, offset 128.
  IntQuantized bytes(1, 4, 1, DType::BF16);
  bytes.codes = {-128, -1, 0, 127};
  std::vector<std::int32_t> word(1);
  std::vector<std::uint16_t> scale(1);
  pack(bytes, 8, std::as_writable_bytes(std::span(word)), std::as_writable_bytes(std::span(scale)), {});
  EXPECT_EQ(static_cast<std::uint32_t>(word[0]), 0xFF807F00u);
}

TEST(IntQuantizer, PackUnpackRoundTripsEveryWidth) {
  std::mt19937 generator(5);
  for (int bits = 2; bits <= 8; ++bits) {
    const std::uint64_t rows = 13, cols = 96, groups = 3;  // rows not a multiple of 32/bits
    IntQuantized quantized(rows, cols, groups, DType::BF16);
    std::uniform_int_distribution<int> code(-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
    for (auto& q : quantized.codes) q = static_cast<std::int8_t>(code(generator));
    for (auto& z : quantized.zeros) z = static_cast<std::int8_t>(code(generator));
    for (auto& s : quantized.scales) s = bf16_to_f32(f32_to_bf16(0.01f * (1 + code(generator) + 128)));
    const auto shapes = packed_shapes(rows, cols, bits);
    std::vector<std::byte> packed(rows * shapes.words_per_row * 4), scales(rows * groups * 2),
        zeros(shapes.zero_point_rows * groups * 4);
    pack(quantized, bits, packed, scales, zeros);
    const auto back = unpack(packed, scales, DType::BF16, zeros, rows, cols, groups, bits);
    EXPECT_EQ(back.codes, quantized.codes) << bits;
    EXPECT_EQ(back.zeros, quantized.zeros) << bits;
    EXPECT_EQ(back.scales, quantized.scales) << bits;
  }
}

// compressed-tensors' pack_to_int32: ⌊32/b⌋ codes per word, none split across words. 3-bit
// codes: 10 per word in bits 0..29 (30, 31 stay zero), so 11 codes take 2 words, not the 33
// bits a dense stream would use; zero points the same way down the rows.
TEST(IntQuantizer, PacksLikeCompressedTensorsForWidthsThatDoNotDivide32) {
  for (int bits : {3, 5, 6, 7}) {
    const int per_word = 32 / bits;
    const std::uint64_t rows = per_word + 1, cols = per_word + 1;
    const auto shapes = packed_shapes(rows, cols, bits);
    EXPECT_EQ(shapes.words_per_row, 2u) << bits;
    EXPECT_EQ(shapes.zero_point_rows, 2u) << bits;
    IntQuantized quantized(rows, cols, 1, DType::BF16);
    const int top = (1 << (bits - 1)) - 1;  // stored as 2^b - 1: every bit of the field set
    for (auto& q : quantized.codes) q = static_cast<std::int8_t>(top);
    for (auto& z : quantized.zeros) z = static_cast<std::int8_t>(top);
    std::vector<std::uint32_t> packed(rows * 2), zeros(2);
    std::vector<std::byte> scales(rows * 2);
    pack(quantized, bits, std::as_writable_bytes(std::span(packed)), scales,
         std::as_writable_bytes(std::span(zeros)));
    const std::uint32_t full = static_cast<std::uint32_t>((std::uint64_t{1} << (per_word * bits)) - 1);
    const std::uint32_t one = (1u << bits) - 1u;
    EXPECT_EQ(packed[0], full) << bits;
    EXPECT_EQ(packed[1], one) << bits;
    EXPECT_EQ(zeros[0], full) << bits;
    EXPECT_EQ(zeros[1], one) << bits;
  }
}

void expect_same(const IntQuantized& a, const IntQuantized& b, const ErrorEnergy& ea,
                 const ErrorEnergy& eb, const std::string& what) {
  EXPECT_EQ(a.codes, b.codes) << what;
  EXPECT_EQ(a.zeros, b.zeros) << what;
  EXPECT_EQ(0, std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * 4)) << what;
  EXPECT_EQ(ea.error, eb.error) << what;
  EXPECT_EQ(ea.signal, eb.signal) << what;
}

std::vector<IntScheme> all_schemes() {
  std::vector<IntScheme> schemes;
  for (Observer observer : {Observer::MinMax, Observer::Mse}) {
    schemes.push_back(scheme(8, true, 128, observer));
    schemes.push_back(scheme(8, true, kChannel, observer));
    schemes.push_back(scheme(4, false, 128, observer));
    schemes.push_back(scheme(4, false, 32, observer));
    schemes.push_back(scheme(4, true, 128, observer));
  }
  return schemes;
}

TEST(IntQuantizer, CpuEqualsReferenceForEverySchemeDtypeAndThreadCount) {
  const auto values = realistic_matrix(37, 256, 11);
  const auto bf16 = to_bf16(values);
  std::vector<std::uint16_t> f16(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) f16[i] = f32_to_f16(values[i]);
  const std::vector<WeightView> views = {
      bf16_view(bf16, 37),
      {DType::F16, std::as_bytes(std::span(f16)), 37, 256},
      {DType::F32, std::as_bytes(std::span(values)), 37, 256},
  };
  for (const auto& view : views)
    for (const auto& s : all_schemes()) {
      IntQuantized reference;
      const auto expected = quantize(view, s, reference, Backend::Reference);
      for (int threads : {1, 2, 5}) {
        IntQuantized cpu;
        const auto energy = tbb::task_arena(threads).execute(
            [&] { return quantize(view, s, cpu, Backend::Cpu); });
        expect_same(reference, cpu, expected, energy,
                    std::string(dtype_name(view.dtype)) + " " + observer_name(s.observer));
      }
    }
}

TEST(IntQuantizer, CudaEqualsReference) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  const auto values = realistic_matrix(70, 512, 13);
  const auto bf16 = to_bf16(values);
  for (const auto& s : all_schemes()) {
    IntQuantized reference, device;
    const auto expected = quantize(bf16_view(bf16, 70), s, reference, Backend::Reference);
    const auto energy = quantize(bf16_view(bf16, 70), s, device, Backend::Cuda);
    expect_same(reference, device, expected, energy, observer_name(s.observer));
  }
}

}  // namespace
}  // namespace qs::intq
