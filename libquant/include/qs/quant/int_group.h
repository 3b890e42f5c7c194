#pragma once
// Integer weight quantization of one group (a run of consecutive input columns of one output
// row), shared by the scalar reference, the CPU and the CUDA quantizers and by GPTQ; all
// QS_HOST_DEVICE (docs/formats/compressed-tensors.md, "Quantization math").
//
// The grid is compressed-tensors' (what llm-compressor writes and vLLM reads):
//  * codes are signed, q ∈ [-2^(b-1), 2^(b-1)-1], for symmetric and asymmetric alike;
//  * the range always contains 0: lo = min(min w, 0), hi = max(max w, 0);
//  * symmetric: s = amax / (R/2) with R = 2^b - 1 (int4: amax/7.5, int8: amax/127.5), zp = 0;
//  * asymmetric: s = (hi - lo) / R, zp = round(clamp(q_min - lo/s, q_min, q_max));
//  * q = round_half_even(clamp(w/s + zp, q_min, q_max)); ŵ = (q - zp) · s.
// Every intermediate is rounded to the scale dtype (the weight's: BF16, F16 or F32), because
// the library computes in the weight dtype ("Arithmetic dtype"): without that ~1e-3 of codes differ
// from llm-compressor's at .5 boundaries. A scale of 0 (an all-zero group) becomes that dtype's
// epsilon, as in compressed-tensors; its zero point is 0 (the library's is NaN cast to int8,
// undefined), and every code then decodes to 0 anyway. Groups whose range reaches the dtype's
// limits are the exception to the library's arithmetic: its hi − lo and (q − zp)·s overflow
// to Inf there, ours stay finite (group_params, decodable_code).

#include <cmath>
#include <cstdint>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/dtype.h"
#include "qs/ckpt/core/host_device.h"

namespace qs::intq {

// The MSE observer's clipping search (llm-compressor's memoryless_mse grid: the group range
// shrunk by p = 1 - i/100, i < 20). We score candidates by squared error, not |e|^2.4, so the
// choice is the same on every backend (no pow()).
inline constexpr int kMseShrinkSteps = 20;
inline constexpr float kMseShrinkStep = 0.01f;

struct IntFormat {
  int bits = 4;
  bool symmetric = false;
  QS_HOST_DEVICE int q_min() const { return -(1 << (bits - 1)); }
  QS_HOST_DEVICE int q_max() const { return (1 << (bits - 1)) - 1; }
  QS_HOST_DEVICE float range() const { return static_cast<float>((1 << bits) - 1); }
};

struct GroupParams {
  float scale = 0.0f;  // already representable in the scale dtype
  int zero = 0;        // in [q_min, q_max]; 0 when symmetric
};

QS_HOST_DEVICE inline bool is_finite_value(float value) {
  return (f32_to_bits(value) & 0x7F800000u) != 0x7F800000u;
}

// Rounds to the nearest value of `dtype` (BF16 / F16 round to nearest even; F32 unchanged).
QS_HOST_DEVICE inline float round_to_dtype(float value, DType dtype) {
  if (dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(value));
  if (dtype == DType::F16) return f16_to_f32(f32_to_f16(value));
  return value;
}

// torch.finfo(dtype).eps: what compressed-tensors puts in place of a zero scale.
QS_HOST_DEVICE inline float scale_epsilon(DType dtype) {
  if (dtype == DType::BF16) return 0.0078125f;    // 2^-7
  if (dtype == DType::F16) return 0.0009765625f;  // 2^-10
  return 1.1920928955078125e-07f;                 // 2^-23
}

QS_HOST_DEVICE inline float clamp_to(float value, float low, float high) {
  return value < low ? low : (value > high ? high : value);
}

// calculate_qparams for one group whose smallest and largest weights are `low` and `high`.
QS_HOST_DEVICE inline GroupParams group_params(float low, float high, IntFormat format,
                                               DType dtype) {
  low = low < 0.0f ? low : 0.0f;
  high = high > 0.0f ? high : 0.0f;
  GroupParams params;
  if (format.symmetric) {
    const float amax = -low > high ? -low : high;
    params.scale = round_to_dtype(amax / (format.range() / 2.0f), dtype);
  } else {
    const float span = round_to_dtype(high - low, dtype);
    // hi − lo overflows the dtype when the group holds values near both of its limits (±3.39e38
    // in BF16), though the scale, a fraction of it, is representable: computed in f64 there.
    // Finite spans keep the library's arithmetic, so ordinary groups are unchanged.
    params.scale = is_finite_value(span)
                       ? round_to_dtype(span / format.range(), dtype)
                       : round_to_dtype(static_cast<float>((static_cast<double>(high) - low) /
                                                           static_cast<double>(format.range())),
                                        dtype);
    if (params.scale != 0.0f) {
      const float zero = round_to_dtype(
          static_cast<float>(format.q_min()) - round_to_dtype(low / params.scale, dtype), dtype);
      params.zero = static_cast<int>(rintf(clamp_to(zero, static_cast<float>(format.q_min()),
                                                    static_cast<float>(format.q_max()))));
    }
  }
  if (params.scale == 0.0f) params.scale = scale_epsilon(dtype);
  return params;
}

// The largest finite value of a scale dtype.
QS_HOST_DEVICE inline float largest_finite(DType dtype) {
  if (dtype == DType::BF16) return 3.3895313892515355e38f;  // 0x7F7F
  if (dtype == DType::F16) return 65504.0f;
  return 3.4028234663852886e38f;
}

// What a consumer decodes: (q - zp) · s in the scale dtype.
QS_HOST_DEVICE inline float dequantize_value(int code, GroupParams params, DType dtype) {
  return round_to_dtype(static_cast<float>(code - params.zero) * params.scale, dtype);
}

// `code`, or its neighbour towards the zero point when `code` would decode past the dtype's
// largest value. Only groups whose range reaches the dtype's limits get there: a BF16 weight
// of −3.39e38 under int8 has s = 2^121 and w/s = −127.5, which rounds to −128, and
// −128 · 2^121 = −2^128 is Inf; −127 is as near and decodes to −3.37e38. The test on the scale
// keeps the check off the path of every ordinary group (|q − zp| ≤ 255).
QS_HOST_DEVICE inline int decodable_code(int code, GroupParams params, DType dtype) {
  if (params.scale <= largest_finite(dtype) / 256.0f) return code;
  if (is_finite_value(dequantize_value(code, params, dtype))) return code;
  return code > params.zero ? code - 1 : code + 1;
}

// One weight's code under the group's parameters.
QS_HOST_DEVICE inline int quantize_value(float weight, GroupParams params, IntFormat format,
                                         DType dtype) {
  float scaled = round_to_dtype(weight / params.scale, dtype);
  if (params.zero != 0) scaled = round_to_dtype(scaled + static_cast<float>(params.zero), dtype);
  const int code = static_cast<int>(rintf(clamp_to(scaled, static_cast<float>(format.q_min()),
                                                   static_cast<float>(format.q_max()))));
  return decodable_code(code, params, dtype);
}

// Σ (w - ŵ)² over the group, in element order.
QS_HOST_DEVICE inline float group_squared_error(const float* weights, int count,
                                                GroupParams params, IntFormat format,
                                                DType dtype) {
  float error = 0.0f;
  for (int i = 0; i < count; ++i) {
    const float decoded =
        dequantize_value(quantize_value(weights[i], params, format, dtype), params, dtype);
    const float difference = weights[i] - decoded;
    error += difference * difference;
  }
  return error;
}

enum class Observer : std::uint8_t { MinMax, Mse };

// The group's parameters: from its range (MinMax), or the range shrunk by the candidate with
// the least squared error (Mse; ties keep the wider range).
QS_HOST_DEVICE inline GroupParams observe_group(const float* weights, int count, IntFormat format,
                                                DType dtype, Observer observer) {
  float low = 0.0f, high = 0.0f;
  for (int i = 0; i < count; ++i) {
    low = weights[i] < low ? weights[i] : low;
    high = weights[i] > high ? weights[i] : high;
  }
  GroupParams best = group_params(low, high, format, dtype);
  if (observer == Observer::MinMax) return best;
  float best_error = group_squared_error(weights, count, best, format, dtype);
  for (int step = 1; step < kMseShrinkSteps; ++step) {
    const float shrink = 1.0f - static_cast<float>(step) * kMseShrinkStep;
    const GroupParams candidate = group_params(round_to_dtype(shrink * low, dtype),
                                               round_to_dtype(shrink * high, dtype), format, dtype);
    const float error = group_squared_error(weights, count, candidate, format, dtype);
    if (error < best_error) {
      best = candidate;
      best_error = error;
    }
  }
  return best;
}

}  // namespace qs::intq
