#pragma once
// NVFP4 per-block math shared by the scalar reference, the CPU and the CUDA quantizers: one
// 16-element block, its E4M3 scale code and its E2M1 codes (docs/formats/modelopt-nvfp4.md:
// "Two-level scales", "E2M1 rounding", "MSE multiplier search", "FP8 scale sweep",
// "Output-aware scales"). Everything is QS_HOST_DEVICE.
//
// The E2M1 rounding comes in two interchangeable policies:
//  * CodecE2M1: the integer-exact codec of codecs.h, written from the format's definition.
//    The reference backend uses it; it is the truth.
//  * ThresholdE2M1: the decision table of "E2M1 rounding" as seven branch-free comparisons, which
//    compilers vectorise. The CPU and CUDA backends use it; tests hold it to the codec for
//    every BF16 value and for the hard cases.
//
// Conventions:
//  * s2 is the global *decode* scale (ModelOpt's weight_scale_2; compressed-tensors stores its
//    reciprocal): w ≈ e2m1(code) · e4m3(scale_code) · s2.
//  * A block's amax ignores NaN and ±Inf; NaN encodes to +6 (0x7) and ±Inf saturates to ±6,
//    as the codec does. Callers reject or zero non-finite weights before (--nan-policy); this
//    only keeps the kernels total.
//  * An all-zero block gets scale code e4m3(1.0) = 0x38 whatever the method (ModelOpt's
//    dynamic export does this; every code decodes the block to zero).
//  * fp32 in a fixed operation order: block sums are a fixed pairwise tree (so vector code
//    computes the very same sums), and there is no FMA contraction (the CUDA file is built
//    with -fmad=false, the host with -ffp-contract=off).

#include <cstdint>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/host_device.h"

namespace qs::fp4 {

// Hessian: E4M3 scale candidates scored by the block's output error eᵀ·H_b·e (H_b the 16×16
// diagonal block of the layer's input second moments) instead of its squared error eᵀe.
enum class ScaleMethod : std::uint8_t { Max, Mse, Fp8Sweep, Joint, Hessian };

inline constexpr int kBlockSize = 16;
inline constexpr float kE2M1Max = 6.0f;
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE4M3MinSubnormal = 0.001953125f;   // 2^-9
inline constexpr std::uint8_t kZeroBlockScaleCode = 0x38;  // e4m3(1.0)
inline constexpr std::uint8_t kLargestScaleCode = 0x7E;    // 448
// ModelOpt's MSE search ("MSE multiplier search"): 39 multipliers of the block amax,
// linspace(0.25, 4.0).
inline constexpr int kMseCandidates = 39;
inline constexpr float kMseFirst = 0.25f;
inline constexpr float kMseLast = 4.0f;
inline constexpr int kJointScaleSteps = 8;  // s2 · 2^(k/8), k < 8
inline constexpr int kJointCodeRadius = 8;  // search: codes within ±8 of the max code
// hessian: codes within ±16 of the max code, a factor 4 either way (8 E4M3 codes per octave),
// the span of ModelOpt's MSE multipliers (0.25 to 4); a quarter of the full sweep's cost.
inline constexpr int kHessianCodeRadius = 16;
// hessian's global-scale search scores its candidates on every 4th row of the group.
inline constexpr int kHessianScoreRowStride = 4;

struct CodecE2M1 {
  QS_HOST_DEVICE static std::uint8_t encode(float value) { return f32_to_e2m1(value); }
  QS_HOST_DEVICE static float decode_scaled(std::uint8_t code, float scale) {
    return e2m1_to_f32(code) * scale;
  }
};

struct ThresholdE2M1 {
  // Branch-free on purpose: random weights would mispredict every branch.
  QS_HOST_DEVICE static std::uint8_t encode(float value) {
    const std::uint32_t bits = f32_to_bits(value);
    const float magnitude = f32_from_bits(bits & 0x7FFFFFFFu);
    // Round to nearest with ties to the even code: ≤0.25→0, <0.75→0.5, ≤1.25→1, <1.75→1.5,
    // ≤2.5→2, <3.5→3, ≤5→4, else 6 (Inf included).
    const std::uint32_t index = static_cast<std::uint32_t>(magnitude > 0.25f) +
                                static_cast<std::uint32_t>(magnitude >= 0.75f) +
                                static_cast<std::uint32_t>(magnitude > 1.25f) +
                                static_cast<std::uint32_t>(magnitude >= 1.75f) +
                                static_cast<std::uint32_t>(magnitude > 2.5f) +
                                static_cast<std::uint32_t>(magnitude >= 3.5f) +
                                static_cast<std::uint32_t>(magnitude > 5.0f);
    const std::uint32_t sign = (bits >> 28) & 0x8u;
    // NaN (no comparison holds) becomes +6, 0x7, as in the codec.
    const std::uint32_t nan_mask = 0u - static_cast<std::uint32_t>(!(magnitude == magnitude));
    return static_cast<std::uint8_t>((0x7u & nan_mask) | ((sign | index) & ~nan_mask));
  }
  // ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}[code & 7], times `scale` (a positive number), exactly as
  // e2m1_to_f32(code) · scale rounds.
  QS_HOST_DEVICE static float decode_scaled(std::uint8_t code, float scale) {
    const std::uint32_t index = code & 0x7u;
    float magnitude = 0.5f * static_cast<float>(index);
    magnitude = index >= 5 ? static_cast<float>(index) - 2.0f : magnitude;
    magnitude = index == 7 ? 6.0f : magnitude;
    const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x8u) << 28;
    return f32_from_bits(f32_to_bits(magnitude * scale) | sign);
  }
};

QS_HOST_DEVICE inline float finite_abs_or_zero(float value) {
  const float magnitude = f32_from_bits(f32_to_bits(value) & 0x7FFFFFFFu);
  // NaN fails every comparison; Inf is not below the largest float.
  return magnitude <= 3.4028234663852886e38f ? magnitude : 0.0f;
}

// Sum of 16 terms as a fixed pairwise tree: (t[i] + t[i+8]), then halves again.
QS_HOST_DEVICE inline float tree_sum16(float* terms) {
  for (int width = kBlockSize / 2; width >= 1; width /= 2)
    for (int i = 0; i < width; ++i) terms[i] = terms[i] + terms[i + width];
  return terms[0];
}

QS_HOST_DEVICE inline float block_amax(const float* block) {
  float amax = 0.0f;
  for (int i = 0; i < kBlockSize; ++i) {
    const float magnitude = finite_abs_or_zero(block[i]);
    amax = magnitude > amax ? magnitude : amax;
  }
  return amax;
}

// Σ w² over the block's finite elements.
QS_HOST_DEVICE inline float block_signal(const float* block) {
  float terms[kBlockSize];
  for (int i = 0; i < kBlockSize; ++i) {
    const float magnitude = finite_abs_or_zero(block[i]);
    terms[i] = magnitude * magnitude;
  }
  return tree_sum16(terms);
}

// The E4M3 code of a desired block scale, clamped to [2^-9, 448] and rounded to nearest even
// (ModelOpt's export cast).
QS_HOST_DEVICE inline std::uint8_t scale_code_for(float desired_scale) {
  float clamped = desired_scale < kE4M3MinSubnormal ? kE4M3MinSubnormal : desired_scale;
  clamped = clamped > kE4M3Max ? kE4M3Max : clamped;
  return f32_to_e4m3_satfinite(clamped);
}

// ModelOpt's max path: sf = amax / (6·s2).
QS_HOST_DEVICE inline std::uint8_t max_scale_code(float amax, float s2) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  return scale_code_for(amax / (kE2M1Max * s2));
}

QS_HOST_DEVICE inline float scale_divisor(std::uint8_t scale_code, float s2) {
  return e4m3_to_f32(scale_code) * s2;
}

// Σ (w − e2m1(w/d)·d)² over the block (ModelOpt's loss).
template <typename E2M1>
QS_HOST_DEVICE inline float block_squared_error(const float* block, std::uint8_t scale_code,
                                                float s2) {
  const float divisor = scale_divisor(scale_code, s2);
  float terms[kBlockSize];
  for (int i = 0; i < kBlockSize; ++i) {
    const float decoded = E2M1::decode_scaled(E2M1::encode(block[i] / divisor), divisor);
    const float difference = block[i] - decoded;
    terms[i] = difference * difference;
  }
  return tree_sum16(terms);
}

// ModelOpt's static MSE search: candidate scales amax·m/(6·s2) for 39 multipliers m; the
// first minimum wins.
template <typename E2M1>
QS_HOST_DEVICE inline std::uint8_t mse_scale_code(const float* block, float amax, float s2) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  const float step = (kMseLast - kMseFirst) / static_cast<float>(kMseCandidates - 1);
  std::uint8_t best_code = 0;
  float best_error = 0.0f;
  for (int k = 0; k < kMseCandidates; ++k) {
    const float multiplier = kMseFirst + step * static_cast<float>(k);
    const std::uint8_t code = scale_code_for(amax * multiplier / (kE2M1Max * s2));
    const float error = block_squared_error<E2M1>(block, code, s2);
    if (k == 0 || error < best_error) {
      best_error = error;
      best_code = code;
    }
  }
  return best_code;
}

// Every code in [first, last] (positive finite E4M3 codes), strict < so ties keep the
// smallest code. fp8-sweep uses the full range 0x01..0x7E; our joint search a window.
template <typename E2M1>
QS_HOST_DEVICE inline std::uint8_t sweep_scale_code(const float* block, float amax, float s2,
                                                    int first, int last) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  auto best_code = static_cast<std::uint8_t>(first);
  float best_error = block_squared_error<E2M1>(block, best_code, s2);
  for (int code = first + 1; code <= last; ++code) {
    const float error = block_squared_error<E2M1>(block, static_cast<std::uint8_t>(code), s2);
    if (error < best_error) {
      best_error = error;
      best_code = static_cast<std::uint8_t>(code);
    }
  }
  return best_code;
}

// Our joint search's per-block step: the codes within `radius` of the max-derived code.
template <typename E2M1>
QS_HOST_DEVICE inline std::uint8_t window_scale_code(const float* block, float amax, float s2,
                                                     int radius) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  const int center = max_scale_code(amax, s2);
  const int first = center - radius < 1 ? 1 : center - radius;
  const int last = center + radius > kLargestScaleCode ? kLargestScaleCode : center + radius;
  return sweep_scale_code<E2M1>(block, amax, s2, first, last);
}

// eᵀ·H·e for a block's error e and a 16×16 row-major H as fixed trees: each row's Σ_j H_ij·e_j,
// then Σ_i e_i·(row i). H is symmetric positive semi-definite, so the result is ≥ 0 up to
// rounding.
QS_HOST_DEVICE inline float block_quadratic_form(const float* error, const float* hessian) {
  float outer[kBlockSize];
  for (int i = 0; i < kBlockSize; ++i) {
    float inner[kBlockSize];
    for (int j = 0; j < kBlockSize; ++j) inner[j] = hessian[i * kBlockSize + j] * error[j];
    outer[i] = error[i] * tree_sum16(inner);
  }
  return tree_sum16(outer);
}

// The block's share of the layer objective ‖ΔW·X‖² (its cross terms with other blocks left
// out): eᵀ·H_b·e with e = w − e2m1(w/d)·d.
template <typename E2M1>
QS_HOST_DEVICE inline float block_output_error(const float* block, const float* hessian,
                                               std::uint8_t scale_code, float s2) {
  const float divisor = scale_divisor(scale_code, s2);
  float error[kBlockSize];
  for (int i = 0; i < kBlockSize; ++i)
    error[i] = block[i] - E2M1::decode_scaled(E2M1::encode(block[i] / divisor), divisor);
  return block_quadratic_form(error, hessian);
}

// The codes in [first, last] scored by the output error; strict < so ties keep the smallest.
template <typename E2M1>
QS_HOST_DEVICE inline std::uint8_t hessian_sweep_scale_code(const float* block,
                                                            const float* hessian, float amax,
                                                            float s2, int first, int last) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  auto best_code = static_cast<std::uint8_t>(first);
  float best_error = block_output_error<E2M1>(block, hessian, best_code, s2);
  for (int code = first + 1; code <= last; ++code) {
    const float error =
        block_output_error<E2M1>(block, hessian, static_cast<std::uint8_t>(code), s2);
    if (error < best_error) {
      best_error = error;
      best_code = static_cast<std::uint8_t>(code);
    }
  }
  return best_code;
}

// The hessian method's search: the codes within `radius` of the max-derived code (its
// global-scale candidates are scored with a narrower window, as joint's are).
template <typename E2M1>
QS_HOST_DEVICE inline std::uint8_t hessian_window_scale_code(const float* block,
                                                             const float* hessian, float amax,
                                                             float s2, int radius) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  const int center = max_scale_code(amax, s2);
  const int first = center - radius < 1 ? 1 : center - radius;
  const int last = center + radius > kLargestScaleCode ? kLargestScaleCode : center + radius;
  return hessian_sweep_scale_code<E2M1>(block, hessian, amax, s2, first, last);
}

// `hessian`: the block's 16×16 H_b for ScaleMethod::Hessian; without one (a module no
// calibration token reached) the hessian method is the fp8-sweep. Other methods ignore it.
template <typename E2M1>
QS_HOST_DEVICE inline std::uint8_t choose_scale_code(const float* block, float s2,
                                                     ScaleMethod method,
                                                     const float* hessian = nullptr) {
  const float amax = block_amax(block);
  switch (method) {
    case ScaleMethod::Max:
      return max_scale_code(amax, s2);
    case ScaleMethod::Mse:
      return mse_scale_code<E2M1>(block, amax, s2);
    case ScaleMethod::Hessian:
      if (hessian)
        return hessian_window_scale_code<E2M1>(block, hessian, amax, s2, kHessianCodeRadius);
      return sweep_scale_code<E2M1>(block, amax, s2, 1, kLargestScaleCode);
    case ScaleMethod::Fp8Sweep:
    case ScaleMethod::Joint:  // joint differs from fp8-sweep only in the s2 it is given
      return sweep_scale_code<E2M1>(block, amax, s2, 1, kLargestScaleCode);
  }
  return max_scale_code(amax, s2);
}

// Writes the block's 8 packed bytes (even element in the low nibble).
template <typename E2M1>
QS_HOST_DEVICE inline void encode_block(const float* block, std::uint8_t scale_code, float s2,
                                        std::uint8_t* packed) {
  const float divisor = scale_divisor(scale_code, s2);
  for (int i = 0; i < kBlockSize; i += 2)
    packed[i / 2] =
        pack_e2m1_pair(E2M1::encode(block[i] / divisor), E2M1::encode(block[i + 1] / divisor));
}

}  // namespace qs::fp4
