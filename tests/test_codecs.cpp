// Element codecs (qs/ckpt/core/codecs.h) against expectations computed a different way: decoded
// values from the bit-field formula with ldexp (or, for e2m1, the value table), encodings
// from a nearest-neighbour search over the representable values. Exhaustive over every code,
// every tie between neighbours (midpoint and one f32 ulp either side), overflow, Inf, NaN, −0.

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"

#ifdef QS_HAVE_CUDA
#include "qs/quant/cuda_availability.h"
#include "qs/quant/cuda_casts.h"
#endif

namespace qs {
namespace {

// ---------------------------------------------------------------------------------------------
// Independent description of the formats

enum class Specials { IeeeInfNan, NanAtTopCodeOnly, None };

struct BinaryFormat {
  const char* name;
  int exponent_bits;
  int mantissa_bits;
  int bias;
  Specials specials;

  std::uint32_t sign_bit() const { return 1u << (exponent_bits + mantissa_bits); }
  std::uint32_t code_count() const { return sign_bit() << 1; }
};

constexpr BinaryFormat kBf16{"bf16", 8, 7, 127, Specials::IeeeInfNan};
constexpr BinaryFormat kF16{"f16", 5, 10, 15, Specials::IeeeInfNan};
constexpr BinaryFormat kE4M3{"e4m3", 4, 3, 7, Specials::NanAtTopCodeOnly};
constexpr BinaryFormat kE5M2{"e5m2", 5, 2, 15, Specials::IeeeInfNan};

enum class Kind { Finite, Inf, Nan };

struct ExpectedValue {
  Kind kind;
  bool negative;
  double value;  // signed; meaningful for Finite only
};

// sign · 2^(e − bias) · (1 + m / 2^M) for normals, sign · 2^(1 − bias) · m / 2^M for subnormals.
double field_formula(std::uint32_t exponent_field, std::uint32_t mantissa,
                     const BinaryFormat& format) {
  if (exponent_field == 0)
    return std::ldexp(static_cast<double>(mantissa), 1 - format.bias - format.mantissa_bits);
  return std::ldexp(1.0 + std::ldexp(static_cast<double>(mantissa), -format.mantissa_bits),
                    static_cast<int>(exponent_field) - format.bias);
}

ExpectedValue expected_decode(const BinaryFormat& format, std::uint32_t code) {
  const bool negative = (code & format.sign_bit()) != 0;
  const std::uint32_t magnitude = code & (format.sign_bit() - 1);
  const std::uint32_t exponent_field = magnitude >> format.mantissa_bits;
  const std::uint32_t mantissa = magnitude & ((1u << format.mantissa_bits) - 1);
  const std::uint32_t top_field = (1u << format.exponent_bits) - 1;
  if (format.specials == Specials::IeeeInfNan && exponent_field == top_field)
    return {mantissa == 0 ? Kind::Inf : Kind::Nan, negative, 0.0};
  if (format.specials == Specials::NanAtTopCodeOnly && magnitude == format.sign_bit() - 1)
    return {Kind::Nan, negative, 0.0};
  const double value = field_formula(exponent_field, mantissa, format);
  return {Kind::Finite, negative, negative ? -value : value};
}

// The e2m1 magnitudes, written out by hand rather than derived from a formula.
constexpr double kE2M1Magnitudes[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

// One representable non-negative value and its magnitude code.
struct GridPoint {
  double value;
  std::uint32_t code;
};

// Ascending non-negative finite values, followed by the value the next code up would have if
// the exponent had no limit (480 for e4m3, 65536 for e5m2 and f16, 2^128 for bf16, 8 for e2m1).
// Reaching that virtual point is overflow.
std::vector<GridPoint> positive_grid(const BinaryFormat& format) {
  std::vector<GridPoint> grid;
  std::uint32_t magnitude = 0;
  for (; magnitude < format.sign_bit(); ++magnitude) {
    const ExpectedValue expected = expected_decode(format, magnitude);
    if (expected.kind != Kind::Finite) break;
    grid.push_back({expected.value, magnitude});
  }
  grid.push_back({field_formula(magnitude >> format.mantissa_bits,
                                magnitude & ((1u << format.mantissa_bits) - 1), format),
                  magnitude});
  return grid;
}

std::vector<GridPoint> e2m1_grid() {
  std::vector<GridPoint> grid;
  for (std::uint32_t index = 0; index < 8; ++index) grid.push_back({kE2M1Magnitudes[index], index});
  grid.push_back({8.0, 8});
  return grid;
}

// An encoder under test, with how its format writes a sign and what overflow becomes.
struct EncoderCase {
  const char* name;
  std::function<std::uint32_t(float)> encode;
  std::vector<GridPoint> grid;
  std::uint32_t sign_bit;
  std::uint32_t overflow_code;  // magnitude code for values that round past the top
};

std::vector<EncoderCase> all_encoders() {
  return {
      {"bf16", [](float x) { return std::uint32_t{f32_to_bf16(x)}; }, positive_grid(kBf16), 0x8000,
       0x7F80},
      {"f16", [](float x) { return std::uint32_t{f32_to_f16(x)}; }, positive_grid(kF16), 0x8000,
       0x7C00},
      {"e4m3 satfinite", [](float x) { return std::uint32_t{f32_to_e4m3_satfinite(x)}; },
       positive_grid(kE4M3), 0x80, 0x7E},
      {"e4m3 overflow→NaN", [](float x) { return std::uint32_t{f32_to_e4m3_overflow_to_nan(x)}; },
       positive_grid(kE4M3), 0x80, 0x7F},
      {"e5m2 satfinite", [](float x) { return std::uint32_t{f32_to_e5m2_satfinite(x)}; },
       positive_grid(kE5M2), 0x80, 0x7B},
      {"e5m2 overflow→Inf", [](float x) { return std::uint32_t{f32_to_e5m2_overflow_to_inf(x)}; },
       positive_grid(kE5M2), 0x80, 0x7C},
      {"e2m1", [](float x) { return std::uint32_t{f32_to_e2m1(x)}; }, e2m1_grid(), 0x8, 0x7},
  };
}

// Nearest grid value by binary search and exact double arithmetic, ties to the even code.
std::uint32_t reference_encode(const EncoderCase& encoder, float x) {
  const double magnitude = std::fabs(static_cast<double>(x));
  const auto& grid = encoder.grid;
  std::uint32_t code;
  const auto above = std::upper_bound(grid.begin(), grid.end(), magnitude,
                                      [](double a, const GridPoint& p) { return a < p.value; });
  if (above == grid.end()) {
    code = grid.back().code;  // at or past the virtual point
  } else {
    const GridPoint& low = *(above - 1);
    const GridPoint& high = *above;
    const double to_low = magnitude - low.value;  // exact: neighbours are within a factor 2
    const double to_high = high.value - magnitude;
    if (to_low < to_high)
      code = low.code;
    else if (to_high < to_low)
      code = high.code;
    else
      code = (low.code % 2 == 0) ? low.code : high.code;
  }
  if (code == grid.back().code) code = encoder.overflow_code;
  return (std::signbit(x) ? encoder.sign_bit : 0u) | code;
}

std::uint32_t bits_of(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float float_of_bits(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

float exact_float(double value) {
  const auto narrowed = static_cast<float>(value);
  EXPECT_EQ(static_cast<double>(narrowed), value) << "test value not representable in f32";
  return narrowed;
}

std::string hex(std::uint32_t code) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%X", code);
  return text;
}

// Every decoded code against the formula; NaNs by class and sign, the rest bit for bit
// (so −0 is checked too).
void expect_decoder_matches_formula(const BinaryFormat& format,
                                    const std::function<float(std::uint32_t)>& decode) {
  for (std::uint32_t code = 0; code < format.code_count(); ++code) {
    const ExpectedValue expected = expected_decode(format, code);
    const float decoded = decode(code);
    SCOPED_TRACE(std::string(format.name) + " code " + hex(code));
    switch (expected.kind) {
      case Kind::Nan:
        EXPECT_TRUE(std::isnan(decoded));
        EXPECT_EQ(std::signbit(decoded), expected.negative);
        break;
      case Kind::Inf:
        EXPECT_EQ(bits_of(decoded), bits_of(expected.negative ? -INFINITY : INFINITY));
        break;
      case Kind::Finite:
        EXPECT_EQ(bits_of(decoded), bits_of(exact_float(expected.value))) << decoded;
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding: every code

TEST(CodecDecode, Bf16EveryCode) {
  expect_decoder_matches_formula(kBf16,
                                 [](std::uint32_t c) { return bf16_to_f32(std::uint16_t(c)); });
}

TEST(CodecDecode, Bf16KeepsNanPayloadBitForBit) {
  for (std::uint32_t code : {0x7F81u, 0x7FC0u, 0xFFFFu, 0x7FA5u})
    EXPECT_EQ(bits_of(bf16_to_f32(std::uint16_t(code))), code << 16);
}

TEST(CodecDecode, F16EveryCodeIncludingSubnormals) {
  expect_decoder_matches_formula(kF16,
                                 [](std::uint32_t c) { return f16_to_f32(std::uint16_t(c)); });
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));
}

TEST(CodecDecode, E4M3EveryCode) {
  expect_decoder_matches_formula(kE4M3,
                                 [](std::uint32_t c) { return e4m3_to_f32(std::uint8_t(c)); });
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xFF)));
}

TEST(CodecDecode, E5M2EveryCode) {
  expect_decoder_matches_formula(kE5M2,
                                 [](std::uint32_t c) { return e5m2_to_f32(std::uint8_t(c)); });
  EXPECT_EQ(e5m2_to_f32(0x7B), 57344.0f);
  EXPECT_EQ(e5m2_to_f32(0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(e5m2_to_f32(0x7C), INFINITY);
}

TEST(CodecDecode, E2M1EveryNibbleFromTheValueTable) {
  for (std::uint32_t nibble = 0; nibble < 16; ++nibble) {
    const double magnitude = kE2M1Magnitudes[nibble & 7];
    const float expected = exact_float((nibble & 8) != 0 ? -magnitude : magnitude);
    EXPECT_EQ(bits_of(e2m1_to_f32(std::uint8_t(nibble))), bits_of(expected)) << hex(nibble);
  }
  EXPECT_TRUE(std::signbit(e2m1_to_f32(0x8)));  // −0
}

TEST(CodecDecode, E8M0EveryCode) {
  for (std::uint32_t code = 0; code < 255; ++code)
    EXPECT_EQ(e8m0_to_f32(std::uint8_t(code)), std::ldexp(1.0f, static_cast<int>(code) - 127))
        << code;
  EXPECT_TRUE(std::isnan(e8m0_to_f32(0xFF)));
}

// ---------------------------------------------------------------------------------------------
// Encoding: round trips over every code

template <typename Decode, typename Encode>
void expect_round_trip(const BinaryFormat& format, Decode decode, Encode encode,
                       bool inf_codes_round_trip) {
  for (std::uint32_t code = 0; code < format.code_count(); ++code) {
    const ExpectedValue expected = expected_decode(format, code);
    if (expected.kind == Kind::Nan) continue;
    if (expected.kind == Kind::Inf && !inf_codes_round_trip) continue;
    EXPECT_EQ(std::uint32_t{encode(decode(code))}, code) << format.name << " " << hex(code);
  }
}

TEST(CodecRoundTrip, EveryNonNanCodeIncludingNegativeZero) {
  expect_round_trip(
      kBf16, [](std::uint32_t c) { return bf16_to_f32(std::uint16_t(c)); }, f32_to_bf16, true);
  expect_round_trip(
      kF16, [](std::uint32_t c) { return f16_to_f32(std::uint16_t(c)); }, f32_to_f16, true);
  const auto e4m3 = [](std::uint32_t c) { return e4m3_to_f32(std::uint8_t(c)); };
  expect_round_trip(kE4M3, e4m3, f32_to_e4m3_satfinite, true);
  expect_round_trip(kE4M3, e4m3, f32_to_e4m3_overflow_to_nan, true);
  const auto e5m2 = [](std::uint32_t c) { return e5m2_to_f32(std::uint8_t(c)); };
  expect_round_trip(kE5M2, e5m2, f32_to_e5m2_overflow_to_inf, true);
  expect_round_trip(kE5M2, e5m2, f32_to_e5m2_satfinite, false);  // Inf saturates, see below
  for (std::uint32_t nibble = 0; nibble < 16; ++nibble)
    EXPECT_EQ(f32_to_e2m1(e2m1_to_f32(std::uint8_t(nibble))), nibble);
}

// ---------------------------------------------------------------------------------------------
// Encoding: every tie. For neighbours (low, high) — including the top finite value and the
// virtual point past it — the exact midpoint goes to the even code, one f32 ulp below to low,
// one above to high; all mirrored for negative values.

void expect_all_ties(const EncoderCase& encoder) {
  const auto& grid = encoder.grid;
  const auto resolve = [&](std::uint32_t code) {
    return code == grid.back().code ? encoder.overflow_code : code;
  };
  int failures = 0;
  for (std::size_t i = 0; i + 1 < grid.size() && failures < 20; ++i) {
    const GridPoint& low = grid[i];
    const GridPoint& high = grid[i + 1];
    const float midpoint = exact_float((low.value + high.value) / 2);
    const std::uint32_t even = resolve(low.code % 2 == 0 ? low.code : high.code);
    const struct {
      float value;
      std::uint32_t code;
      const char* what;
    } probes[] = {
        {midpoint, even, "midpoint"},
        {std::nextafter(midpoint, 0.0f), resolve(low.code), "midpoint - ulp"},
        {std::nextafter(midpoint, INFINITY), resolve(high.code), "midpoint + ulp"},
        {exact_float(low.value), low.code, "low itself"},
    };
    for (const auto& probe : probes) {
      for (const bool negative : {false, true}) {
        const float input = negative ? -probe.value : probe.value;
        const std::uint32_t expected = (negative ? encoder.sign_bit : 0u) | probe.code;
        const std::uint32_t actual = encoder.encode(input);
        if (actual != expected) {
          ++failures;
          ADD_FAILURE() << encoder.name << " " << probe.what << " between " << low.value << " and "
                        << high.value << ": input " << input << " gave " << hex(actual)
                        << ", expected " << hex(expected);
        }
      }
    }
  }
}

TEST(CodecTies, Bf16EveryNeighbourPair) { expect_all_ties(all_encoders()[0]); }
TEST(CodecTies, F16EveryNeighbourPairIncludingSubnormals) { expect_all_ties(all_encoders()[1]); }
TEST(CodecTies, E4M3SatfiniteEveryNeighbourPair) { expect_all_ties(all_encoders()[2]); }
TEST(CodecTies, E4M3OverflowToNanEveryNeighbourPair) { expect_all_ties(all_encoders()[3]); }
TEST(CodecTies, E5M2SatfiniteEveryNeighbourPair) { expect_all_ties(all_encoders()[4]); }
TEST(CodecTies, E5M2OverflowToInfEveryNeighbourPair) { expect_all_ties(all_encoders()[5]); }
TEST(CodecTies, E2M1EveryNeighbourPair) { expect_all_ties(all_encoders()[6]); }

TEST(CodecTies, GridsHaveTheSizesTheFormatsDefine) {
  const auto encoders = all_encoders();
  EXPECT_EQ(encoders[0].grid.size(), 0x7F80u + 1);  // bf16: 0 … max finite, then 2^128
  EXPECT_EQ(encoders[1].grid.size(), 0x7C00u + 1);
  EXPECT_EQ(encoders[2].grid.size(), 0x7Fu + 1);  // e4m3: 0x00 … 0x7E, then 480
  EXPECT_EQ(encoders[2].grid.back().value, 480.0);
  EXPECT_EQ(encoders[4].grid.size(), 0x7Cu + 1);
  EXPECT_EQ(encoders[4].grid.back().value, 65536.0);
}

// ---------------------------------------------------------------------------------------------
// Encoding: against the search-based reference on a sweep over all f32 bit patterns (every
// 1021st) and on random values in each format's range

std::vector<float> sweep_of_all_floats() {
  std::vector<float> values;
  for (std::uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 1021) {
    const float value = float_of_bits(static_cast<std::uint32_t>(bits));
    if (!std::isnan(value)) values.push_back(value);
  }
  return values;
}

std::vector<float> random_values_near(double top, std::size_t count, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<double> magnitude(0.0, 1.0);
  std::uniform_int_distribution<int> binade(-30, 1);
  std::bernoulli_distribution negative(0.5);
  std::vector<float> values;
  for (std::size_t i = 0; i < count; ++i) {
    const double value = std::ldexp(magnitude(generator) * top, binade(generator));
    values.push_back(static_cast<float>(negative(generator) ? -value : value));
  }
  return values;
}

TEST(CodecEncode, MatchesNearestValueSearchOnAnF32Sweep) {
  const std::vector<float> sweep = sweep_of_all_floats();
  for (const EncoderCase& encoder : all_encoders()) {
    int failures = 0;
    std::vector<float> inputs = sweep;
    const auto in_range = random_values_near(encoder.grid.back().value, 200000, 7);
    inputs.insert(inputs.end(), in_range.begin(), in_range.end());
    for (const float x : inputs) {
      const std::uint32_t expected = reference_encode(encoder, x);
      const std::uint32_t actual = encoder.encode(x);
      if (actual != expected && ++failures <= 10)
        ADD_FAILURE() << encoder.name << " of " << x << " (" << hex(bits_of(x)) << ") gave "
                      << hex(actual) << ", expected " << hex(expected);
    }
    EXPECT_EQ(failures, 0) << encoder.name;
  }
}

#ifdef __FLT16_MANT_DIG__
// The compiler's own _Float16 conversion is a third, independent implementation of f16 RNE.
TEST(CodecEncode, F16MatchesCompilerFloat16) {
  int failures = 0;
  for (std::uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 257) {
    const float x = float_of_bits(static_cast<std::uint32_t>(bits));
    if (std::isnan(x)) continue;
    const _Float16 narrowed = static_cast<_Float16>(x);
    std::uint16_t expected;
    std::memcpy(&expected, &narrowed, sizeof expected);
    if (f32_to_f16(x) != expected && ++failures <= 10)
      ADD_FAILURE() << x << " gave " << hex(f32_to_f16(x)) << ", _Float16 " << hex(expected);
  }
  EXPECT_EQ(failures, 0);
}
#endif

// ---------------------------------------------------------------------------------------------
// Encoding: the values the conventions single out

const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kSignalingNan = float_of_bits(0x7F800001u);
const float kInf = INFINITY;
const float kDenormMin = std::numeric_limits<float>::denorm_min();

TEST(CodecSpecials, Bf16) {
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie → even 1.0
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie → even
  EXPECT_EQ(f32_to_bf16(FLT_MAX), 0x7F80);                          // past max + ½ulp → Inf
  EXPECT_EQ(f32_to_bf16(-kInf), 0xFF80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(kDenormMin), 0x0000);
  EXPECT_EQ(f32_to_bf16(float_of_bits(0x00008000u)), 0x0000);  // subnormal tie → even
  EXPECT_EQ(f32_to_bf16(float_of_bits(0x00018000u)), 0x0002);
  EXPECT_EQ(f32_to_bf16(kNan), 0x7FC0);
  EXPECT_EQ(f32_to_bf16(-kNan), 0xFFC0);
  // Plain truncation would turn this signalling NaN into Inf.
  EXPECT_EQ(f32_to_bf16(kSignalingNan), 0x7FC0);
  EXPECT_EQ(f32_to_bf16(float_of_bits(0x7FFFFFFFu)), 0x7FC0);  // would carry into the sign
}

TEST(CodecSpecials, F16) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);  // max + ½ulp ties to the even code, Inf
  EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(f32_to_f16(-kInf), 0xFC00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // half the smallest subnormal → even 0
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -25)), 0x8000);
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(3 * std::ldexp(1.0f, -25)), 0x0002);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);  // into normals
  EXPECT_EQ(f32_to_f16(kDenormMin), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(kNan), 0x7E00);
  EXPECT_EQ(f32_to_f16(-kNan), 0xFE00);
  EXPECT_EQ(f32_to_f16(kSignalingNan), 0x7E00);
}

TEST(CodecSpecials, E4M3Satfinite) {
  EXPECT_EQ(f32_to_e4m3_satfinite(448.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3_satfinite(464.0f), 0x7E);  // tie between 448 and 480 → even 0x7E
  EXPECT_EQ(f32_to_e4m3_satfinite(std::nextafter(464.0f, 1e9f)), 0x7E);
  EXPECT_EQ(f32_to_e4m3_satfinite(480.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3_satfinite(-1e30f), 0xFE);
  EXPECT_EQ(f32_to_e4m3_satfinite(FLT_MAX), 0x7E);
  EXPECT_EQ(f32_to_e4m3_satfinite(kInf), 0x7E);
  EXPECT_EQ(f32_to_e4m3_satfinite(-kInf), 0xFE);
  EXPECT_EQ(f32_to_e4m3_satfinite(kNan), 0x7F);
  EXPECT_EQ(f32_to_e4m3_satfinite(-kNan), 0xFF);
  EXPECT_EQ(f32_to_e4m3_satfinite(0.0f), 0x00);
  EXPECT_EQ(f32_to_e4m3_satfinite(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e4m3_satfinite(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_EQ(f32_to_e4m3_satfinite(std::ldexp(1.0f, -10)), 0x00);   // subnormal tie → even 0
  EXPECT_EQ(f32_to_e4m3_satfinite(-std::ldexp(1.0f, -11)), 0x80);  // negative underflow keeps sign
  EXPECT_EQ(f32_to_e4m3_satfinite(3 * std::ldexp(1.0f, -10)), 0x02);  // tie 1 vs 2 → 2
  EXPECT_EQ(f32_to_e4m3_satfinite(std::ldexp(15.0f, -10)), 0x08);     // 7.5 steps → min normal
  EXPECT_EQ(f32_to_e4m3_satfinite(kDenormMin), 0x00);
  // The NVFP4 scale casts of docs/formats/modelopt-nvfp4.md, "Test vector".
  EXPECT_EQ(f32_to_e4m3_satfinite(134.4f), 0x70);
  EXPECT_EQ(f32_to_e4m3_satfinite(1.0f), 0x38);
}

TEST(CodecSpecials, E4M3OverflowToNanLikeTorch) {
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(448.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(464.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(std::nextafter(464.0f, 1e9f)), 0x7F);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(480.0f), 0x7F);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(-500.0f), 0xFF);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(kInf), 0x7F);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(-kInf), 0xFF);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(kNan), 0x7F);
  EXPECT_EQ(f32_to_e4m3_overflow_to_nan(-0.0f), 0x80);
}

TEST(CodecSpecials, E5M2BothVariants) {
  EXPECT_EQ(f32_to_e5m2_satfinite(57344.0f), 0x7B);
  EXPECT_EQ(f32_to_e5m2_satfinite(61440.0f), 0x7B);  // ties to 0x7C (overflow), then saturates
  EXPECT_EQ(f32_to_e5m2_satfinite(std::nextafter(61440.0f, 0.0f)), 0x7B);
  EXPECT_EQ(f32_to_e5m2_satfinite(kInf), 0x7B);
  EXPECT_EQ(f32_to_e5m2_satfinite(-kInf), 0xFB);
  EXPECT_EQ(f32_to_e5m2_satfinite(kNan), 0x7F);
  EXPECT_EQ(f32_to_e5m2_satfinite(-kNan), 0xFF);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(61440.0f), 0x7C);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(std::nextafter(61440.0f, 0.0f)), 0x7B);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(-1e6f), 0xFC);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(kInf), 0x7C);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(kNan), 0x7F);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(std::ldexp(1.0f, -17)), 0x00);
  EXPECT_EQ(f32_to_e5m2_overflow_to_inf(-0.0f), 0x80);
}

TEST(CodecSpecials, E2M1TieTableOfTheSpecs) {
  // docs/formats/modelopt-nvfp4.md, "E2M1 rounding"; nibble = index.
  const struct {
    float input;
    std::uint8_t nibble;
  } cases[] = {
      {0.25f, 0x0},      {0.75f, 0x2},      {1.25f, 0x2},      {1.75f, 0x4},      {2.5f, 0x4},
      {3.5f, 0x6},       {5.0f, 0x6},       {0.2500001f, 0x1}, {0.7499999f, 0x1}, {1.2500001f, 0x3},
      {1.7499999f, 0x3}, {2.5000002f, 0x5}, {3.4999998f, 0x5}, {5.0000005f, 0x7}, {6.0f, 0x7},
      {6.5f, 0x7},       {7.0f, 0x7},       {100.0f, 0x7},     {FLT_MAX, 0x7},    {-0.25f, 0x8},
      {-0.75f, 0xA},     {-5.0f, 0xE},      {-1e9f, 0xF},
  };
  for (const auto& c : cases) EXPECT_EQ(f32_to_e2m1(c.input), c.nibble) << c.input;
}

TEST(CodecSpecials, E2M1SignsInfAndNan) {
  EXPECT_EQ(f32_to_e2m1(0.0f), 0x0);
  EXPECT_EQ(f32_to_e2m1(-0.0f), 0x8);   // sign kept (compressed-tensors packs signbit)
  EXPECT_EQ(f32_to_e2m1(-0.05f), 0x8);  // negative that rounds to zero: −0, as ModelOpt writes
  EXPECT_EQ(f32_to_e2m1(-kDenormMin), 0x8);
  EXPECT_EQ(f32_to_e2m1(kInf), 0x7);
  EXPECT_EQ(f32_to_e2m1(-kInf), 0xF);
  EXPECT_EQ(f32_to_e2m1(kNan), 0x7);  // no NaN code: +6, whatever the sign
  EXPECT_EQ(f32_to_e2m1(-kNan), 0x7);
  EXPECT_EQ(f32_to_e2m1(kSignalingNan), 0x7);
}

// The NVFP4 test vector of docs/formats/modelopt-nvfp4.md, computed in f32 as ModelOpt does:
// s2 = amax / (6·448), block scale = e4m3(block_amax / (6·s2)), code = e2m1(w / (scale·s2)).
TEST(CodecSpecials, ReproducesModelOptNvfp4TestVector) {
  const float weights[32] = {3.0f,  -1.5f,  0.7f,   0.2f,   -0.05f, 1.0f,  2.25f,  -2.9f,
                             0.0f,  0.5f,   -0.75f, 1.2f,   0.33f,  -0.1f, 2.0f,   -3.0f,
                             0.9f,  -0.45f, 0.3f,   0.0f,   0.05f,  -0.9f, 0.6f,   0.15f,
                             -0.2f, 0.44f,  0.8f,   -0.66f, 0.12f,  0.0f,  -0.03f, 0.27f};
  const float global_scale = 3.0f / (6.0f * 448.0f);
  EXPECT_EQ(bits_of(global_scale), 0x3A924925u);
  std::uint8_t scale_bytes[2];
  std::uint8_t packed[16];
  for (int block = 0; block < 2; ++block) {
    float block_amax = 0;
    for (int i = 0; i < 16; ++i)
      block_amax = std::max(block_amax, std::fabs(weights[16 * block + i]));
    scale_bytes[block] = f32_to_e4m3_satfinite(block_amax / (6.0f * global_scale));
    const float effective_scale = e4m3_to_f32(scale_bytes[block]) * global_scale;
    for (int pair = 0; pair < 8; ++pair) {
      const float* w = &weights[16 * block + 2 * pair];
      packed[8 * block + pair] =
          pack_e2m1_pair(f32_to_e2m1(w[0] / effective_scale), f32_to_e2m1(w[1] / effective_scale));
    }
  }
  EXPECT_EQ(scale_bytes[0], 0x7E);
  EXPECT_EQ(scale_bytes[1], 0x70);
  const std::uint8_t expected[16] = {0xD7, 0x13, 0x48, 0xF6, 0x20, 0x4B, 0x81, 0xF6,
                                     0xD7, 0x04, 0xF1, 0x26, 0x5B, 0xE7, 0x02, 0x48};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(packed[i], expected[i]) << "byte " << i;
}

TEST(CodecPacking, EvenElementInTheLowNibble) {
  EXPECT_EQ(pack_e2m1_pair(0x1, 0xF), 0xF1);
  EXPECT_EQ(pack_e2m1_pair(0x7, 0x8), 0x87);
  for (std::uint32_t byte = 0; byte < 256; ++byte) {
    const auto b = static_cast<std::uint8_t>(byte);
    EXPECT_EQ(unpack_e2m1_even(b), byte & 0xF);
    EXPECT_EQ(unpack_e2m1_odd(b), byte >> 4);
    EXPECT_EQ(pack_e2m1_pair(unpack_e2m1_even(b), unpack_e2m1_odd(b)), b);
  }
}

// ---------------------------------------------------------------------------------------------
// Batch conversions equal the scalar ones, for odd lengths and lengths that get threaded

const std::size_t kBatchLengths[] = {0, 1, 2, 7, 64, 1001, (1u << 16) + 3, 3 * (1u << 16) + 1};

std::vector<float> random_floats(std::size_t count, std::uint32_t seed) {
  // Half arbitrary bit patterns (NaN, Inf, subnormals included), half values in [-8, 8].
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> small(-8.0f, 8.0f);
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i)
    values[i] =
        (i % 2 == 0) ? float_of_bits(static_cast<std::uint32_t>(generator())) : small(generator);
  return values;
}

template <typename Code>
std::vector<Code> random_codes(std::size_t count, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<Code> codes(count);
  for (auto& code : codes) code = static_cast<Code>(generator());
  return codes;
}

void expect_same_bits(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i)
    ASSERT_EQ(bits_of(actual[i]), bits_of(expected[i])) << "element " << i;
}

template <typename Code, typename Batch, typename Scalar>
void expect_batch_decode_matches(Batch batch, Scalar scalar) {
  for (const std::size_t length : kBatchLengths) {
    const auto codes = random_codes<Code>(length, 11 + static_cast<std::uint32_t>(length));
    std::vector<float> actual(length), expected(length);
    batch(std::span<const Code>(codes), std::span<float>(actual));
    for (std::size_t i = 0; i < length; ++i) expected[i] = scalar(codes[i]);
    expect_same_bits(actual, expected);
  }
}

template <typename Code, typename Batch, typename Scalar>
void expect_batch_encode_matches(Batch batch, Scalar scalar) {
  for (const std::size_t length : kBatchLengths) {
    const auto values = random_floats(length, 5 + static_cast<std::uint32_t>(length));
    std::vector<Code> actual(length), expected(length);
    batch(std::span<const float>(values), std::span<Code>(actual));
    for (std::size_t i = 0; i < length; ++i) expected[i] = scalar(values[i]);
    ASSERT_EQ(actual, expected) << "length " << length;
  }
}

TEST(CodecBatch, DecodersEqualScalar) {
  expect_batch_decode_matches<std::uint16_t>(convert_bf16_to_f32, bf16_to_f32);
  expect_batch_decode_matches<std::uint16_t>(convert_f16_to_f32, f16_to_f32);
  expect_batch_decode_matches<std::uint8_t>(convert_e4m3_to_f32, e4m3_to_f32);
  expect_batch_decode_matches<std::uint8_t>(convert_e5m2_to_f32, e5m2_to_f32);
}

TEST(CodecBatch, EncodersEqualScalar) {
  expect_batch_encode_matches<std::uint16_t>(convert_f32_to_bf16, f32_to_bf16);
  expect_batch_encode_matches<std::uint16_t>(convert_f32_to_f16, f32_to_f16);
  expect_batch_encode_matches<std::uint8_t>(convert_f32_to_e4m3_satfinite, f32_to_e4m3_satfinite);
  expect_batch_encode_matches<std::uint8_t>(convert_f32_to_e5m2_satfinite, f32_to_e5m2_satfinite);
}

TEST(CodecBatch, PackedE2M1BothWaysIncludingOddLengths) {
  for (const std::size_t length : kBatchLengths) {
    const auto values = random_floats(length, 3 + static_cast<std::uint32_t>(length));
    std::vector<std::uint8_t> packed((length + 1) / 2);
    convert_f32_to_e2m1_packed(values, packed);
    for (std::size_t i = 0; i < length; ++i) {
      const std::uint8_t byte = packed[i / 2];
      const std::uint8_t nibble = i % 2 == 0 ? unpack_e2m1_even(byte) : unpack_e2m1_odd(byte);
      ASSERT_EQ(nibble, f32_to_e2m1(values[i])) << "length " << length << " element " << i;
    }
    if (length % 2 != 0) {
      EXPECT_EQ(unpack_e2m1_odd(packed.back()), 0) << "odd tail is padded with 0";
    }

    std::vector<float> decoded(length), expected(length);
    convert_e2m1_packed_to_f32(packed, decoded);
    for (std::size_t i = 0; i < length; ++i) expected[i] = e2m1_to_f32(f32_to_e2m1(values[i]));
    expect_same_bits(decoded, expected);
  }
}

template <typename Call>
void expect_internal_size_error(Call call) {
  try {
    call();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& error) {
    EXPECT_EQ(error.error_class(), ErrorClass::Internal);
    EXPECT_EQ(error.kind(), "codecs.size_mismatch");
  }
}

TEST(CodecBatch, SizeMismatchesThrowInternal) {
  std::vector<float> floats(5);
  std::vector<std::uint16_t> halves(4);
  std::vector<std::uint8_t> bytes(4);
  expect_internal_size_error([&] { convert_bf16_to_f32(halves, floats); });
  expect_internal_size_error([&] { convert_f32_to_f16(floats, halves); });
  expect_internal_size_error([&] { convert_e4m3_to_f32(bytes, floats); });
  expect_internal_size_error([&] { convert_f32_to_e5m2_satfinite(floats, bytes); });
  expect_internal_size_error([&] { convert_f32_to_e2m1_packed(floats, bytes); });  // needs 3
  expect_internal_size_error([&] { convert_e2m1_packed_to_f32(bytes, floats); });
  std::vector<std::uint8_t> three(3);
  EXPECT_NO_THROW(convert_f32_to_e2m1_packed(floats, three));
  EXPECT_NO_THROW(convert_e2m1_packed_to_f32(three, floats));
}

// ---------------------------------------------------------------------------------------------
// decode_to_f32 over the safetensors dtypes

template <typename T>
std::vector<std::byte> little_endian_bytes(const std::vector<T>& elements) {
  std::vector<std::byte> bytes(elements.size() * sizeof(T));
  std::memcpy(bytes.data(), elements.data(), bytes.size());
  return bytes;
}

std::vector<float> decode(DType dtype, const std::vector<std::byte>& bytes, std::size_t count) {
  std::vector<float> out(count);
  decode_to_f32(dtype, bytes, out);
  return out;
}

TEST(CodecDecodeDType, FloatFormats) {
  EXPECT_EQ(decode(DType::BF16, little_endian_bytes<std::uint16_t>({0x3F80, 0xC040}), 2),
            (std::vector<float>{1.0f, -3.0f}));
  EXPECT_EQ(decode(DType::F16, little_endian_bytes<std::uint16_t>({0x3C00, 0x0001}), 2),
            (std::vector<float>{1.0f, std::ldexp(1.0f, -24)}));
  EXPECT_EQ(decode(DType::F32, little_endian_bytes<float>({1.5f, -2.0f}), 2),
            (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(decode(DType::F64, little_endian_bytes<double>({0.1, 1e300, -1e300, 1.0 + 1e-12}), 4),
            (std::vector<float>{0.1f, INFINITY, -INFINITY, 1.0f}));
  // Just under FLT_MAX + ½ulp stays finite; at it the tie goes to Inf.
  const double overflow_tie = std::ldexp(1.0, 128) - std::ldexp(1.0, 103);
  EXPECT_EQ(
      decode(DType::F64,
             little_endian_bytes<double>({std::nextafter(overflow_tie, 0.0), overflow_tie}), 2),
      (std::vector<float>{FLT_MAX, INFINITY}));
  EXPECT_EQ(decode(DType::F8_E4M3, little_endian_bytes<std::uint8_t>({0x7E, 0x01}), 2),
            (std::vector<float>{448.0f, std::ldexp(1.0f, -9)}));
  EXPECT_EQ(decode(DType::F8_E5M2, little_endian_bytes<std::uint8_t>({0x7B, 0xFC}), 2),
            (std::vector<float>{57344.0f, -INFINITY}));
  EXPECT_EQ(decode(DType::F8_E8M0, little_endian_bytes<std::uint8_t>({127, 130}), 2),
            (std::vector<float>{1.0f, 8.0f}));
  EXPECT_EQ(decode(DType::F4, little_endian_bytes<std::uint8_t>({0xF1, 0x07}), 3),
            (std::vector<float>{0.5f, -6.0f, 6.0f}));
  EXPECT_TRUE(std::isnan(decode(DType::F32, little_endian_bytes<float>({kNan}), 1)[0]));
}

TEST(CodecDecodeDType, IntegersBecomeTheirValues) {
  EXPECT_EQ(decode(DType::BOOL, little_endian_bytes<std::uint8_t>({0, 1, 2}), 3),
            (std::vector<float>{0.0f, 1.0f, 1.0f}));
  EXPECT_EQ(decode(DType::U8, little_endian_bytes<std::uint8_t>({255}), 1),
            (std::vector<float>{255.0f}));
  EXPECT_EQ(decode(DType::I8, little_endian_bytes<std::int8_t>({-128}), 1),
            (std::vector<float>{-128.0f}));
  EXPECT_EQ(decode(DType::U16, little_endian_bytes<std::uint16_t>({65535}), 1),
            (std::vector<float>{65535.0f}));
  EXPECT_EQ(decode(DType::I16, little_endian_bytes<std::int16_t>({-32768}), 1),
            (std::vector<float>{-32768.0f}));
  EXPECT_EQ(decode(DType::U32, little_endian_bytes<std::uint32_t>({16777217u}), 1),
            (std::vector<float>{16777216.0f}));
  EXPECT_EQ(decode(DType::I32, little_endian_bytes<std::int32_t>({-7}), 1),
            (std::vector<float>{-7.0f}));
  EXPECT_EQ(decode(DType::U64, little_endian_bytes<std::uint64_t>({1ull << 40}), 1),
            (std::vector<float>{std::ldexp(1.0f, 40)}));
  EXPECT_EQ(decode(DType::I64, little_endian_bytes<std::int64_t>({-(1ll << 50)}), 1),
            (std::vector<float>{-std::ldexp(1.0f, 50)}));
}

TEST(CodecDecodeDType, UnalignedBytesAreRead) {
  std::vector<std::byte> bytes(1 + 2 * sizeof(float));
  const float values[2] = {3.25f, -7.0f};
  std::memcpy(bytes.data() + 1, values, sizeof values);
  std::vector<float> out(2);
  decode_to_f32(DType::F32, std::span<const std::byte>(bytes).subspan(1), out);
  EXPECT_EQ(out, (std::vector<float>{3.25f, -7.0f}));
}

TEST(CodecDecodeDType, WrongByteCountsAndUnsupportedTypesThrow) {
  std::vector<float> out(3);
  const std::vector<std::byte> five(5);
  expect_internal_size_error([&] { decode_to_f32(DType::BF16, five, out); });
  expect_internal_size_error([&] { decode_to_f32(DType::F4, five, out); });  // 3 elements need 2
  try {
    decode_to_f32(DType::F6_E2M3, five, out);
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& error) {
    EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
    EXPECT_EQ(error.kind(), "codecs.unsupported_dtype");
  }
}

TEST(CodecDecodeDType, LongSpansEqualTheScalarDecoder) {
  const auto codes = random_codes<std::uint16_t>(3 * (1u << 16) + 5, 99);
  std::vector<float> out(codes.size());
  decode_to_f32(DType::BF16, little_endian_bytes(codes), out);
  for (std::size_t i = 0; i < codes.size(); ++i)
    ASSERT_EQ(bits_of(out[i]), bits_of(bf16_to_f32(codes[i]))) << i;
}

// ---------------------------------------------------------------------------------------------
// CUDA: the kernels against the scalar reference, on every code and on every tie probe

#ifdef QS_HAVE_CUDA

class CodecCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    const CudaAvailability availability = cuda_availability();
    if (!availability.usable) GTEST_SKIP() << availability.reason;
  }
};

// Every tie probe of every format (midpoints and one ulp either side, both signs), the f32
// sweep, and the special values: the inputs that separate correct rounding from almost-correct.
std::vector<float> encoder_probe_inputs() {
  std::vector<float> inputs = sweep_of_all_floats();
  for (const EncoderCase& encoder : all_encoders()) {
    for (std::size_t i = 0; i + 1 < encoder.grid.size(); ++i) {
      const auto midpoint =
          static_cast<float>((encoder.grid[i].value + encoder.grid[i + 1].value) / 2);
      for (const float probe :
           {midpoint, std::nextafter(midpoint, 0.0f), std::nextafter(midpoint, INFINITY),
            static_cast<float>(encoder.grid[i].value)}) {
        inputs.push_back(probe);
        inputs.push_back(-probe);
      }
    }
  }
  for (const float special : {kNan, -kNan, kSignalingNan, kInf, -kInf, -0.0f, kDenormMin, FLT_MAX})
    inputs.push_back(special);
  inputs.push_back(1.0f);  // odd count, for the packed e2m1 tail
  if (inputs.size() % 2 == 0) inputs.push_back(2.5f);
  return inputs;
}

TEST_F(CodecCuda, DecodersOnEveryCode) {
  std::vector<std::uint16_t> bf16_codes(1u << 16);
  for (std::uint32_t c = 0; c < bf16_codes.size(); ++c)
    bf16_codes[c] = static_cast<std::uint16_t>(c);
  std::vector<float> gpu(bf16_codes.size()), cpu(bf16_codes.size());
  gpu_bf16_to_f32(bf16_codes, gpu);
  convert_bf16_to_f32(bf16_codes, cpu);
  expect_same_bits(gpu, cpu);

  std::vector<std::uint8_t> bytes(256);
  for (std::uint32_t c = 0; c < 256; ++c) bytes[c] = static_cast<std::uint8_t>(c);
  gpu.assign(256, 0.0f);
  cpu.assign(256, 0.0f);
  gpu_e4m3_to_f32(bytes, gpu);
  convert_e4m3_to_f32(bytes, cpu);
  expect_same_bits(gpu, cpu);

  for (const std::size_t count : {std::size_t{512}, std::size_t{511}}) {
    gpu.assign(count, 0.0f);
    cpu.assign(count, 0.0f);
    const std::span<const std::uint8_t> packed(bytes.data(), (count + 1) / 2);
    gpu_e2m1_packed_to_f32(packed, gpu);
    convert_e2m1_packed_to_f32(packed, cpu);
    expect_same_bits(gpu, cpu);
  }
}

TEST_F(CodecCuda, EncodersOnEveryTieProbe) {
  const std::vector<float> inputs = encoder_probe_inputs();
  ASSERT_EQ(inputs.size() % 2, 1u);
  const std::size_t n = inputs.size();

  std::vector<std::uint16_t> gpu16(n), cpu16(n);
  gpu_f32_to_bf16(inputs, gpu16);
  convert_f32_to_bf16(inputs, cpu16);
  EXPECT_EQ(gpu16, cpu16);

  std::vector<std::uint8_t> gpu8(n), cpu8(n);
  gpu_f32_to_e4m3_satfinite(inputs, gpu8);
  convert_f32_to_e4m3_satfinite(inputs, cpu8);
  EXPECT_EQ(gpu8, cpu8);

  gpu_f32_to_e5m2_satfinite(inputs, gpu8);
  convert_f32_to_e5m2_satfinite(inputs, cpu8);
  EXPECT_EQ(gpu8, cpu8);

  std::vector<std::uint8_t> gpu_packed((n + 1) / 2), cpu_packed((n + 1) / 2);
  gpu_f32_to_e2m1_packed(inputs, gpu_packed);
  convert_f32_to_e2m1_packed(inputs, cpu_packed);
  EXPECT_EQ(gpu_packed, cpu_packed);
}

TEST_F(CodecCuda, EmptyInputsAndSizeMismatches) {
  std::vector<float> none;
  std::vector<std::uint16_t> no_codes;
  EXPECT_NO_THROW(gpu_f32_to_bf16(none, no_codes));
  std::vector<float> three(3);
  std::vector<std::uint8_t> one(1);
  expect_internal_size_error([&] { gpu_f32_to_e2m1_packed(three, one); });
  expect_internal_size_error([&] { gpu_e4m3_to_f32(one, three); });
}

#endif  // QS_HAVE_CUDA

}  // namespace
}  // namespace qs
