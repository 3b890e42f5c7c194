#pragma once
// FP8 block-scaled weights (DeepSeek-V3 / Kimi-K2 checkpoints, vLLM's and transformers'
// "fp8" with weight_block_size [128, 128]), the per-element and per-tile math shared by the
// scalar reference, the CPU and the CUDA backends. Everything is QS_HOST_DEVICE.
// docs/formats/fp8-block.md states the format; the conventions we chose:
//
//  * A weight [N, K] is cut into 128 × 128 tiles, the last row and column of tiles cut short
//    when N or K is not a multiple of 128. Each tile has one F32 scale (`weight_scale_inv`,
//    a multiplier despite its name): w ≈ e4m3(code) · scale.
//  * Encoding: scale = amax / 448 over the tile's finite elements, code = RNE(w / scale)
//    with the saturating E4M3 encoder (DeepSeek's and vLLM's dynamic quantizers divide by
//    amax/448 the same way). The scale is never below the smallest normal f32 (2^-126): an
//    all-zero tile gets 1.0 (no engine convention exists; every code is ±0 so any positive
//    scale decodes to zero, and 1.0 is the value our NVFP4 zero blocks use), and a tile of
//    f32 subnormals gets 2^-126 instead of a subnormal or zero divisor.
//  * Non-finite inputs: the amax ignores them; NaN encodes to the NaN code with its sign
//    (sign|0x7F), ±Inf saturates to ±448. Callers refuse or zero them first (--nan-policy);
//    this only keeps the kernels total. −0.0 keeps its sign (0x80).
//  * Decoding: e4m3(code) · scale in f32 (DeepSeek's weight_dequant), then, for BF16
//    outputs, round to nearest even (fp8_cast_bf16.py stores that product as bfloat16).
//  * No FMA contraction anywhere (host -ffp-contract=off, the CUDA file -fmad=false) and
//    IEEE division, so every backend writes the same bytes.

#include <cstdint>

#include "qs/ckpt/core/host_device.h"
#include "qs/ckpt/core/codecs.h"

namespace qs::fp8 {

inline constexpr std::uint64_t kTileRows = 128;
inline constexpr std::uint64_t kTileCols = 128;
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kZeroTileScale = 1.0f;
inline constexpr float kSmallestScale = 1.17549435e-38f;  // 2^-126, the smallest normal f32

// Tiles along a dimension of `extent` elements: ⌈extent / tile⌉.
QS_HOST_DEVICE inline std::uint64_t tile_count(std::uint64_t extent, std::uint64_t tile) {
  return (extent + tile - 1) / tile;
}

// |value| for finite values, 0 for NaN and ±Inf (they do not set the scale).
QS_HOST_DEVICE inline float finite_magnitude(float value) {
  const float magnitude = f32_from_bits(f32_to_bits(value) & 0x7FFFFFFFu);
  return magnitude <= 3.4028234663852886e38f ? magnitude : 0.0f;
}

QS_HOST_DEVICE inline float scale_for_amax(float amax) {
  if (amax == 0.0f) return kZeroTileScale;
  const float scale = amax / kE4M3Max;
  return scale < kSmallestScale ? kSmallestScale : scale;
}

QS_HOST_DEVICE inline std::uint8_t encode(float value, float scale) {
  return f32_to_e4m3_satfinite(value / scale);
}

QS_HOST_DEVICE inline float decode(std::uint8_t code, float scale) {
  return e4m3_to_f32(code) * scale;
}

}  // namespace qs::fp8
