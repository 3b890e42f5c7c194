#pragma once
// Element codecs between f32 and the narrow float formats checkpoints store: bf16, f16,
// fp8 e4m3fn and e5m2, fp4 e2m1 (two per byte) and the e8m0 exponent scale.
//
// Every scalar function here is QS_HOST_DEVICE so the CUDA kernels run this exact code: the
// host reference and the GPU cannot disagree by construction, and tests still compare them.
// They use integer bit manipulation only, never the FPU's own narrowing, so the result does
// not depend on compiler flags, rounding mode or flush-to-zero.
//
// Conventions (all encoders round to nearest, ties to the even code, subnormals included):
//
//  * Signs survive everywhere: −0.0 encodes to the negative-zero code (bf16 0x8000, f16 0x8000,
//    e4m3 0x80, e5m2 0x80, e2m1 0x8), and a negative value that rounds to zero does too. This is
//    what PyTorch, the NVIDIA cvt instructions and compressed-tensors' FP4 packer (which packs
//    signbit) do. Note ModelOpt's _cast_fp4 takes the sign from `x < 0` and so writes 0x0 for an
//    exact −0.0 input; both codes decode to zero, so only byte-for-byte comparisons see it.
//  * NaN in, NaN out where the format has NaN, as one canonical quiet code with the input's
//    sign: bf16 sign|0x7FC0, f16 sign|0x7E00, e4m3 sign|0x7F, e5m2 sign|0x7F. The payload is
//    dropped so output bytes do not depend on where a NaN came from.
//  * e4m3fn has no Inf. Two encoders, because the two producers we reproduce disagree:
//      f32_to_e4m3_satfinite        finite overflow and ±Inf → ±448 (0x7E/0xFE), like PTX
//                                   cvt.rn.satfinite.e4m3x2.f32 and TensorRT-LLM's scale cast.
//                                   The default: a scale byte must never be NaN.
//      f32_to_e4m3_overflow_to_nan  |x| > 464 (past 448 + half an ulp) and ±Inf → sign|0x7F, like
//                                   torch `.to(torch.float8_e4m3fn)`. ModelOpt and
//                                   compressed-tensors clamp to [2^-9, 448] / ±448 before that
//                                   cast (docs/formats/modelopt-nvfp4.md, "Two-level scales")
//                                   precisely because it does not saturate; on
//                                   clamped inputs both encoders agree.
//    In both, 464 itself is a tie between 448 (0x7E, even) and 480 (0x7F, odd) and gives 448.
//  * e5m2 is IEEE-like (Inf 0x7C, NaN 0x7D..0x7F). Rounding is done with an unbounded exponent
//    first, so 61440 (= 57344 + half an ulp) ties to the even code 0x7C, i.e. overflows:
//      f32_to_e5m2_satfinite        overflow and ±Inf → ±57344 (0x7B), like PTX satfinite.
//      f32_to_e5m2_overflow_to_inf  overflow → ±Inf, ±Inf → ±Inf, like torch float8_e5m2.
//  * f16 and bf16 follow IEEE 754: overflow → ±Inf, Inf stays Inf.
//  * e2m1 (magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6) saturates: |x| > 6 and ±Inf → ±6. Ties go to the
//    even code: 0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4 (the tables of
//    docs/formats/modelopt-nvfp4.md, "E2M1 rounding"). NaN has no code; it
//    encodes to +6 (0x7) whatever its sign, which is what ModelOpt's searchsorted-based cast
//    yields (NaN sorts past every bound, and `NaN < 0` is false) and what the CUDA e2m1 satfinite
//    conversion documents ("NaN converts to positive MAXNORM").
//  * Decoding is exact for every code. NaN codes decode to a quiet f32 NaN with the code's sign;
//    bf16 widens bit for bit (a bf16 NaN keeps its payload).

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

#include "qs/ckpt/core/dtype.h"
#include "qs/ckpt/core/host_device.h"

namespace qs {

// ---------------------------------------------------------------------------------------------
// Bit views of f32. memcpy and unions are not allowed in device code or are UB; the CUDA
// intrinsics and std::bit_cast are the exact, defined way on each side.

QS_HOST_DEVICE inline std::uint32_t f32_to_bits(float value) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(value);
#else
  return std::bit_cast<std::uint32_t>(value);
#endif
}

QS_HOST_DEVICE inline float f32_from_bits(std::uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  return std::bit_cast<float>(bits);
#endif
}

namespace codec_detail {

inline constexpr std::uint32_t kF32SignBit = 0x80000000u;
inline constexpr std::uint32_t kF32MagnitudeMask = 0x7FFFFFFFu;
inline constexpr std::uint32_t kF32InfBits = 0x7F800000u;
inline constexpr std::uint32_t kF32QuietNanBits = 0x7FC00000u;
inline constexpr int kF32MantissaBits = 23;
inline constexpr int kF32ExponentBias = 127;

QS_HOST_DEVICE inline bool is_nan_bits(std::uint32_t bits) {
  return (bits & kF32MagnitudeMask) > kF32InfBits;
}
QS_HOST_DEVICE inline bool is_inf_bits(std::uint32_t bits) {
  return (bits & kF32MagnitudeMask) == kF32InfBits;
}

// Rounds a finite f32 magnitude (bits without the sign) to a binary format with the given
// mantissa width and exponent bias, as if its exponent field had no upper limit, ties to even.
// Returns the magnitude code (exponent field << mantissa_bits | mantissa). A code past the
// format's largest finite one means overflow; each encoder resolves that its own way, which is
// why overflow is not decided here.
QS_HOST_DEVICE inline std::uint32_t round_magnitude_to_code(std::uint32_t magnitude_bits,
                                                            int mantissa_bits, int exponent_bias) {
  const int f32_exponent_field = static_cast<int>(magnitude_bits >> kF32MantissaBits);
  const int exponent_field = f32_exponent_field - kF32ExponentBias + exponent_bias;
  // Below the normal range the spacing stays that of exponent field 1 (subnormals), so the
  // extra binades are shifted out of the significand instead.
  const int kept_exponent_field = exponent_field < 1 ? 1 : exponent_field;
  int shift = kF32MantissaBits - mantissa_bits + (kept_exponent_field - exponent_field);
  // From shift 25 on the value is below half the smallest subnormal and rounds to 0; capping
  // at 31 keeps the shifts defined and still gives 0. f32 subnormals (< 2^-126, lacking the
  // implicit bit set below) always land here, for every format that uses this.
  shift = shift > 31 ? 31 : shift;
  const std::uint32_t significand = (magnitude_bits & 0x7FFFFFu) | 0x800000u;
  std::uint32_t kept = significand >> shift;
  const std::uint32_t dropped = significand & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  // Branch-free on purpose: batch loops over random data then neither mispredict nor diverge.
  kept += static_cast<std::uint32_t>(dropped > half) |
          (static_cast<std::uint32_t>(dropped == half) & kept);
  // `kept` carries the implicit bit for normals, so adding it to (field - 1) << M yields
  // field << M | mantissa, and a rounding carry moves into the exponent on its own.
  return (static_cast<std::uint32_t>(kept_exponent_field - 1) << mantissa_bits) + kept;
}

// f32 bits of a finite magnitude code of a binary format (no Inf/NaN handling here). Every
// subnormal of the formats using this is an f32 normal, so it is renormalised.
QS_HOST_DEVICE inline std::uint32_t magnitude_code_to_f32_bits(std::uint32_t code,
                                                               int mantissa_bits,
                                                               int exponent_bias) {
  const std::uint32_t mantissa_mask = (1u << mantissa_bits) - 1u;
  std::uint32_t mantissa = code & mantissa_mask;
  int exponent_field = static_cast<int>(code >> mantissa_bits);
  if (exponent_field == 0) {
    if (mantissa == 0) return 0;
    exponent_field = 1;
    while ((mantissa & (1u << mantissa_bits)) == 0) {
      mantissa <<= 1;
      --exponent_field;
    }
    mantissa &= mantissa_mask;
  }
  const auto f32_exponent_field =
      static_cast<std::uint32_t>(exponent_field - exponent_bias + kF32ExponentBias);
  return (f32_exponent_field << kF32MantissaBits) |
         (mantissa << (kF32MantissaBits - mantissa_bits));
}

}  // namespace codec_detail

// ---------------------------------------------------------------------------------------------
// bf16: the top half of an f32.

QS_HOST_DEVICE inline float bf16_to_f32(std::uint16_t code) {
  return f32_from_bits(static_cast<std::uint32_t>(code) << 16);
}

QS_HOST_DEVICE inline std::uint16_t f32_to_bf16(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  if (codec_detail::is_nan_bits(bits)) return static_cast<std::uint16_t>(sign | 0x7FC0u);
  std::uint32_t kept = bits >> 16;
  const std::uint32_t dropped = bits & 0xFFFFu;
  // A carry out of the largest finite bf16 lands exactly on Inf, as IEEE overflow requires.
  // Branch-free: on random data a branch here mispredicts half the time (2x slower synth).
  kept += static_cast<std::uint32_t>(dropped > 0x8000u) |
          (static_cast<std::uint32_t>(dropped == 0x8000u) & kept & 1u);
  return static_cast<std::uint16_t>(kept);
}

// ---------------------------------------------------------------------------------------------
// f16 (IEEE binary16): 1-5-10, bias 15.

inline constexpr int kF16MantissaBits = 10;
inline constexpr int kF16ExponentBias = 15;
inline constexpr std::uint16_t kF16InfCode = 0x7C00;

QS_HOST_DEVICE inline float f16_to_f32(std::uint16_t code) {
  const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x8000u) << 16;
  const std::uint32_t magnitude = code & 0x7FFFu;
  if (magnitude >= kF16InfCode) {
    const std::uint32_t payload = (magnitude & 0x3FFu) << (23 - kF16MantissaBits);
    if (payload == 0) return f32_from_bits(sign | codec_detail::kF32InfBits);
    return f32_from_bits(sign | codec_detail::kF32QuietNanBits | payload);
  }
  return f32_from_bits(sign | codec_detail::magnitude_code_to_f32_bits(magnitude, kF16MantissaBits,
                                                                       kF16ExponentBias));
}

QS_HOST_DEVICE inline std::uint16_t f32_to_f16(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  if (codec_detail::is_nan_bits(bits)) return static_cast<std::uint16_t>(sign | 0x7E00u);
  if (codec_detail::is_inf_bits(bits)) return static_cast<std::uint16_t>(sign | kF16InfCode);
  const std::uint32_t code = codec_detail::round_magnitude_to_code(
      bits & codec_detail::kF32MagnitudeMask, kF16MantissaBits, kF16ExponentBias);
  return static_cast<std::uint16_t>(sign | (code >= kF16InfCode ? kF16InfCode : code));
}

// ---------------------------------------------------------------------------------------------
// fp8 e4m3fn: 1-4-3, bias 7, no Inf, 0x7F/0xFF are NaN, largest finite 448 (0x7E), smallest
// subnormal 2^-9 (0x01).

inline constexpr int kE4M3MantissaBits = 3;
inline constexpr int kE4M3ExponentBias = 7;
inline constexpr std::uint8_t kE4M3MaxFiniteCode = 0x7E;
inline constexpr std::uint8_t kE4M3NanCode = 0x7F;
inline constexpr float kE4M3MaxFinite = 448.0f;

QS_HOST_DEVICE inline float e4m3_to_f32(std::uint8_t code) {
  const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x80u) << 24;
  const std::uint32_t magnitude = code & 0x7Fu;
  if (magnitude == kE4M3NanCode) return f32_from_bits(sign | codec_detail::kF32QuietNanBits);
  return f32_from_bits(sign | codec_detail::magnitude_code_to_f32_bits(magnitude, kE4M3MantissaBits,
                                                                       kE4M3ExponentBias));
}

// The magnitude code of a finite value, or 0x7F and above on overflow.
QS_HOST_DEVICE inline std::uint32_t e4m3_unbounded_code(std::uint32_t bits) {
  return codec_detail::round_magnitude_to_code(bits & codec_detail::kF32MagnitudeMask,
                                               kE4M3MantissaBits, kE4M3ExponentBias);
}

// Default e4m3 encoder (PTX cvt.rn.satfinite.e4m3x2.f32): overflow and ±Inf → ±448, NaN →
// sign|0x7F.
QS_HOST_DEVICE inline std::uint8_t f32_to_e4m3_satfinite(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  if (codec_detail::is_nan_bits(bits)) return static_cast<std::uint8_t>(sign | kE4M3NanCode);
  if (codec_detail::is_inf_bits(bits)) return static_cast<std::uint8_t>(sign | kE4M3MaxFiniteCode);
  const std::uint32_t code = e4m3_unbounded_code(bits);
  return static_cast<std::uint8_t>(sign | (code > kE4M3MaxFiniteCode ? kE4M3MaxFiniteCode : code));
}

// torch `.to(torch.float8_e4m3fn)`: overflow, ±Inf and NaN → sign|0x7F (NaN).
QS_HOST_DEVICE inline std::uint8_t f32_to_e4m3_overflow_to_nan(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  if ((bits & codec_detail::kF32MagnitudeMask) >= codec_detail::kF32InfBits)
    return static_cast<std::uint8_t>(sign | kE4M3NanCode);
  const std::uint32_t code = e4m3_unbounded_code(bits);
  return static_cast<std::uint8_t>(sign | (code > kE4M3MaxFiniteCode ? kE4M3NanCode : code));
}

// ---------------------------------------------------------------------------------------------
// fp8 e5m2: 1-5-2, bias 15, IEEE-like: 0x7C Inf, 0x7D..0x7F NaN, largest finite 57344 (0x7B).

inline constexpr int kE5M2MantissaBits = 2;
inline constexpr int kE5M2ExponentBias = 15;
inline constexpr std::uint8_t kE5M2MaxFiniteCode = 0x7B;
inline constexpr std::uint8_t kE5M2InfCode = 0x7C;
inline constexpr std::uint8_t kE5M2NanCode = 0x7F;
inline constexpr float kE5M2MaxFinite = 57344.0f;

// e5m2 is bit for bit the top byte of an f16, so decoding widens to f16 and reuses it.
QS_HOST_DEVICE inline float e5m2_to_f32(std::uint8_t code) {
  return f16_to_f32(static_cast<std::uint16_t>(code << 8));
}

QS_HOST_DEVICE inline std::uint32_t e5m2_unbounded_code(std::uint32_t bits) {
  return codec_detail::round_magnitude_to_code(bits & codec_detail::kF32MagnitudeMask,
                                               kE5M2MantissaBits, kE5M2ExponentBias);
}

// Default e5m2 encoder (PTX cvt.rn.satfinite.e5m2x2.f32): overflow and ±Inf → ±57344.
QS_HOST_DEVICE inline std::uint8_t f32_to_e5m2_satfinite(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  if (codec_detail::is_nan_bits(bits)) return static_cast<std::uint8_t>(sign | kE5M2NanCode);
  if (codec_detail::is_inf_bits(bits)) return static_cast<std::uint8_t>(sign | kE5M2MaxFiniteCode);
  const std::uint32_t code = e5m2_unbounded_code(bits);
  return static_cast<std::uint8_t>(sign | (code > kE5M2MaxFiniteCode ? kE5M2MaxFiniteCode : code));
}

// torch `.to(torch.float8_e5m2)`: overflow → ±Inf, Inf stays Inf.
QS_HOST_DEVICE inline std::uint8_t f32_to_e5m2_overflow_to_inf(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  if (codec_detail::is_nan_bits(bits)) return static_cast<std::uint8_t>(sign | kE5M2NanCode);
  if (codec_detail::is_inf_bits(bits)) return static_cast<std::uint8_t>(sign | kE5M2InfCode);
  const std::uint32_t code = e5m2_unbounded_code(bits);
  return static_cast<std::uint8_t>(sign | (code > kE5M2MaxFiniteCode ? kE5M2InfCode : code));
}

// ---------------------------------------------------------------------------------------------
// fp4 e2m1: nibble = sign << 3 | magnitude index, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6. As a
// binary format that is 1-2-1 with bias 1 (index 1 is the one subnormal), which is how it is
// computed; tests check it against the value table instead.

inline constexpr int kE2M1MantissaBits = 1;
inline constexpr int kE2M1ExponentBias = 1;
inline constexpr std::uint8_t kE2M1MaxFiniteCode = 0x7;
inline constexpr float kE2M1MaxFinite = 6.0f;

QS_HOST_DEVICE inline float e2m1_to_f32(std::uint8_t nibble) {
  const std::uint32_t sign = static_cast<std::uint32_t>(nibble & 0x8u) << 28;
  return f32_from_bits(sign | codec_detail::magnitude_code_to_f32_bits(
                                  nibble & 0x7u, kE2M1MantissaBits, kE2M1ExponentBias));
}

// Saturating RNE onto the E2M1 grid; NaN → 0x7 (+6), see the conventions above.
QS_HOST_DEVICE inline std::uint8_t f32_to_e2m1(float value) {
  const std::uint32_t bits = f32_to_bits(value);
  if (codec_detail::is_nan_bits(bits)) return kE2M1MaxFiniteCode;
  const auto sign = static_cast<std::uint8_t>((bits >> 28) & 0x8u);
  if (codec_detail::is_inf_bits(bits)) return static_cast<std::uint8_t>(sign | kE2M1MaxFiniteCode);
  const std::uint32_t code = codec_detail::round_magnitude_to_code(
      bits & codec_detail::kF32MagnitudeMask, kE2M1MantissaBits, kE2M1ExponentBias);
  return static_cast<std::uint8_t>(sign | (code > kE2M1MaxFiniteCode ? kE2M1MaxFiniteCode : code));
}

// Two e2m1 codes per byte, the even (lower-index) element in the low nibble, as ModelOpt,
// compressed-tensors and PTX cvt.rn.satfinite.e2m1x2 (with a = x[1], b = x[0]) lay them out.
QS_HOST_DEVICE inline std::uint8_t pack_e2m1_pair(std::uint8_t even, std::uint8_t odd) {
  return static_cast<std::uint8_t>((even & 0xFu) | ((odd & 0xFu) << 4));
}
QS_HOST_DEVICE inline std::uint8_t unpack_e2m1_even(std::uint8_t byte) {
  return static_cast<std::uint8_t>(byte & 0xFu);
}
QS_HOST_DEVICE inline std::uint8_t unpack_e2m1_odd(std::uint8_t byte) {
  return static_cast<std::uint8_t>(byte >> 4);
}

// ---------------------------------------------------------------------------------------------
// e8m0 (MX block scales): 2^(code - 127); 0xFF is NaN. Code 0 is 2^-127, an f32 subnormal.

QS_HOST_DEVICE inline float e8m0_to_f32(std::uint8_t code) {
  if (code == 0xFFu) return f32_from_bits(codec_detail::kF32QuietNanBits);
  if (code == 0) return f32_from_bits(0x00400000u);
  return f32_from_bits(static_cast<std::uint32_t>(code) << codec_detail::kF32MantissaBits);
}

// ---------------------------------------------------------------------------------------------
// Batch conversions (host, libckpt/src/core/codecs.cpp). Element-wise with the scalar functions
// above, split over threads for long spans; results do not depend on the split. Sizes must
// match (packed e2m1: bytes == (elements + 1) / 2, the last high nibble 0 for an odd count);
// a mismatch is a caller bug and throws qs::Error(Internal, "codecs.size_mismatch").

void convert_bf16_to_f32(std::span<const std::uint16_t> in, std::span<float> out);
void convert_f16_to_f32(std::span<const std::uint16_t> in, std::span<float> out);
void convert_e4m3_to_f32(std::span<const std::uint8_t> in, std::span<float> out);
void convert_e5m2_to_f32(std::span<const std::uint8_t> in, std::span<float> out);
void convert_e2m1_packed_to_f32(std::span<const std::uint8_t> packed, std::span<float> out);

void convert_f32_to_bf16(std::span<const float> in, std::span<std::uint16_t> out);
void convert_f32_to_f16(std::span<const float> in, std::span<std::uint16_t> out);
void convert_f32_to_e4m3_satfinite(std::span<const float> in, std::span<std::uint8_t> out);
void convert_f32_to_e5m2_satfinite(std::span<const float> in, std::span<std::uint8_t> out);
void convert_f32_to_e2m1_packed(std::span<const float> in, std::span<std::uint8_t> packed);

// Decodes `out.size()` elements of `dtype` stored little-endian in `bytes` (as in a safetensors
// file) to f32. Floats: BF16, F16, F32, F64 (rounded to nearest), F8_E4M3, F8_E5M2, F8_E8M0,
// F4 (two per byte, low nibble first). Integers and BOOL become their values (64-bit ones
// rounded to nearest f32). `bytes` must hold exactly the elements (F4: (count + 1) / 2 bytes);
// otherwise qs::Error(Internal, "codecs.size_mismatch"). F6_E2M3/F6_E3M2 throw
// qs::Error(BadInput, "codecs.unsupported_dtype"): their packing is not defined anywhere we read.
void decode_to_f32(DType dtype, std::span<const std::byte> bytes, std::span<float> out);

// Encodes f32 values as F32, BF16 or F16 (round to nearest even) into `bytes`, which must hold
// exactly `values.size()` elements; other dtypes throw qs::Error(Internal, "codecs.encode_dtype").
void encode_from_f32(DType dtype, std::span<const float> values, std::span<std::byte> bytes);

}  // namespace qs
