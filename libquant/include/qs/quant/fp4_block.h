#pragma once
// NVFP4 per-block math shared by the scalar reference, the CPU and the CUDA quantizers: one
// 16-element block, its E4M3 scale code and its E2M1 codes (formats-modelopt-nvfp4.md §1.2,
// §1.3, §3.4, §3.5). Everything is QS_HOST_DEVICE and uses the integer-exact codecs of
// codecs.h, so the three implementations cannot disagree by construction (tests still check).
//
// Conventions:
//  * s2 is the global *decode* scale (ModelOpt's weight_scale_2; compressed-tensors stores its
//    reciprocal): w ≈ e2m1(code) · e4m3(scale_code) · s2.
//  * A block's amax ignores NaN and ±Inf (they never make a scale non-finite); NaN encodes to
//    +6 (0x7) and ±Inf saturates to ±6, as the e2m1 codec does. Callers reject or zero
//    non-finite weights before (--nan-policy); this only keeps the kernels total.
//  * An all-zero block gets scale code e4m3(1.0) = 0x38 whatever the method (ModelOpt's
//    dynamic export does this; every code decodes the block to zero).
//  * fp32 throughout, in a fixed operation order and without FMA contraction (the CUDA file
//    is built with -fmad=false, the host with -ffp-contract=off).

#include <cstdint>

#include "qs/ckpt/codecs.h"
#include "qs/ckpt/host_device.h"

namespace qs::fp4 {

enum class ScaleMethod : std::uint8_t { Max, Mse, Fp8Sweep, Joint };

inline constexpr int kBlockSize = 16;
inline constexpr float kE2M1Max = 6.0f;
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE4M3MinSubnormal = 0.001953125f;   // 2^-9
inline constexpr std::uint8_t kZeroBlockScaleCode = 0x38;  // e4m3(1.0)
inline constexpr std::uint8_t kLargestScaleCode = 0x7E;    // 448
// ModelOpt's MSE search (§3.4): 39 multipliers of the block amax, linspace(0.25, 4.0).
inline constexpr int kMseCandidates = 39;
inline constexpr float kMseFirst = 0.25f;
inline constexpr float kMseLast = 4.0f;

QS_HOST_DEVICE inline float finite_abs_or_zero(float value) {
  const float magnitude = value < 0.0f ? -value : value;
  // NaN fails every comparison; Inf is not below the largest float.
  return magnitude <= 3.4028234663852886e38f ? magnitude : 0.0f;
}

QS_HOST_DEVICE inline float block_amax(const float* block) {
  float amax = 0.0f;
  for (int i = 0; i < kBlockSize; ++i) {
    const float magnitude = finite_abs_or_zero(block[i]);
    amax = magnitude > amax ? magnitude : amax;
  }
  return amax;
}

// The E4M3 code of a desired block scale (the scale that maps the block's amax to 6 under
// s2), clamped to [2^-9, 448] and rounded to nearest even (ModelOpt's export cast).
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

// Σ (w − e2m1(w/d)·d)² over the block, fp32, in element order (ModelOpt's loss).
QS_HOST_DEVICE inline float block_squared_error(const float* block, std::uint8_t scale_code,
                                                float s2) {
  const float divisor = scale_divisor(scale_code, s2);
  float error = 0.0f;
  for (int i = 0; i < kBlockSize; ++i) {
    const float value = block[i];
    const float decoded = e2m1_to_f32(f32_to_e2m1(value / divisor)) * divisor;
    const float difference = value - decoded;
    const float squared = difference * difference;
    error = error + squared;
  }
  return error;
}

// ModelOpt's static MSE search: candidate scales amax·m/(6·s2) for 39 multipliers m; the
// first minimum wins.
QS_HOST_DEVICE inline std::uint8_t mse_scale_code(const float* block, float amax, float s2) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  const float step = (kMseLast - kMseFirst) / static_cast<float>(kMseCandidates - 1);
  std::uint8_t best_code = 0;
  float best_error = 0.0f;
  for (int k = 0; k < kMseCandidates; ++k) {
    const float multiplier = kMseFirst + step * static_cast<float>(k);
    const std::uint8_t code = scale_code_for(amax * multiplier / (kE2M1Max * s2));
    const float error = block_squared_error(block, code, s2);
    if (k == 0 || error < best_error) {
      best_error = error;
      best_code = code;
    }
  }
  return best_code;
}

// Every code in [first, last] (positive finite E4M3 codes), strict < so ties keep the
// smallest code. fp8-sweep uses the full range 0x01..0x7E (§3.5); our joint search a window.
QS_HOST_DEVICE inline std::uint8_t sweep_scale_code(const float* block, float amax, float s2,
                                                    int first, int last) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  std::uint8_t best_code = static_cast<std::uint8_t>(first);
  float best_error = block_squared_error(block, best_code, s2);
  for (int code = first + 1; code <= last; ++code) {
    const float error = block_squared_error(block, static_cast<std::uint8_t>(code), s2);
    if (error < best_error) {
      best_error = error;
      best_code = static_cast<std::uint8_t>(code);
    }
  }
  return best_code;
}

// Our joint search's per-block step: the codes within `radius` of the max-derived code.
QS_HOST_DEVICE inline std::uint8_t window_scale_code(const float* block, float amax, float s2,
                                                     int radius) {
  if (amax == 0.0f) return kZeroBlockScaleCode;
  const int center = max_scale_code(amax, s2);
  const int first = center - radius < 1 ? 1 : center - radius;
  const int last = center + radius > kLargestScaleCode ? kLargestScaleCode : center + radius;
  return sweep_scale_code(block, amax, s2, first, last);
}

inline constexpr int kJointScaleSteps = 8;  // s2 · 2^(k/8), k < 8
inline constexpr int kJointCodeRadius = 4;  // codes within ±4 of the max code

QS_HOST_DEVICE inline std::uint8_t choose_scale_code(const float* block, float s2,
                                                     ScaleMethod method) {
  const float amax = block_amax(block);
  switch (method) {
    case ScaleMethod::Max:
      return max_scale_code(amax, s2);
    case ScaleMethod::Mse:
      return mse_scale_code(block, amax, s2);
    case ScaleMethod::Fp8Sweep:
      return sweep_scale_code(block, amax, s2, 1, kLargestScaleCode);
    case ScaleMethod::Joint:
      return window_scale_code(block, amax, s2, kJointCodeRadius);
  }
  return max_scale_code(amax, s2);
}

// Σ w² over the block's finite elements, fp32 in element order.
QS_HOST_DEVICE inline float block_signal(const float* block) {
  float signal = 0.0f;
  for (int i = 0; i < kBlockSize; ++i) {
    const float magnitude = finite_abs_or_zero(block[i]);
    const float squared = magnitude * magnitude;
    signal = signal + squared;
  }
  return signal;
}

// Writes the block's 8 packed bytes (even element in the low nibble).
QS_HOST_DEVICE inline void encode_block(const float* block, std::uint8_t scale_code, float s2,
                                        std::uint8_t* packed) {
  const float divisor = scale_divisor(scale_code, s2);
  for (int i = 0; i < kBlockSize; i += 2)
    packed[i / 2] =
        pack_e2m1_pair(f32_to_e2m1(block[i] / divisor), f32_to_e2m1(block[i + 1] / divisor));
}

}  // namespace qs::fp4
