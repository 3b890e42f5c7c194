#pragma once
// Vector quantization of Linear weights (docs/algorithms/vq.md, docs/formats/vq.md): each row's
// inputs are cut into vectors of d consecutive columns; each vector is s·c, c a codeword of a
// codebook of K entries shared by many matrices (the whole model's experts of one tier), s one
// scale per (row, 128 columns) stored in the weight's dtype. Codes are chosen by GPTQ with a
// d-dimensional quantizer: the error of fixing d columns at once is fed forward through the
// d×d block of the inverse Hessian's Cholesky factor (exact), or through its diagonal only
// (GPTVQ's approximation, kept for comparison).
//
// Scalar tiers are the same machinery with d = 1 and a fixed uniform codebook (1 bit: {−1, +1},
// the sign × group-scale scalar), so scalar and vector tiers share one layout, one sweep and
// one allocator.
//
// Backends as for every kernel: Reference (scalar loops, the truth), Cpu (oneTBB over rows,
// the codeword search vectorised; bit-identical to Reference at any thread count) and Cuda
// (shares the per-row cores, host/device).

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/core/dtype.h"
#include "qs/ckpt/formats/vq_tier.h"
#include "qs/quant/gptq.h"

namespace qs::vq {

using intq::Backend;

inline constexpr std::uint64_t kScaleGroup = kVqScaleGroup;  // columns per scale

// The tier and codebook data types live in libckpt (qs/ckpt/formats/vq_tier.h) so that plans
// and checkpoint readers carry them; this library does their math.
using Tier = VqTier;
using CodebookKind = VqCodebookKind;
using Codebook = VqCodebook;

// The uniform codebook of a scalar tier (d must be 1): levels (2i − K + 1)·Δ/2 for i < K, Δ the
// step that minimises the mean squared error of a unit normal variable (the sub-vectors are
// RMS-normalised): K = 2 gives ±0.798 (sign × scale), K = 4 ±0.498, ±1.494, K = 8 steps of
// 0.586. Δ is computed (golden-section search on the closed-form error), not tabulated.
Codebook uniform_codebook(const Tier& tier, DType dtype = DType::F16);

// ---- codebook fitting ----
struct KMeansSettings {
  std::uint64_t seed = 0x5eed;    // k-means++ seeding and sampling, deterministic
  std::uint32_t iterations = 25;  // Lloyd rounds (stops early when no assignment changes)
};
// Weighted k-means over `points` ([n, d], scale-normalised sub-vectors) with per-coordinate
// weights `weights` ([n, d]; the calibration Hessian's diagonal at each coordinate's input
// column, normalised per matrix; empty: all 1): distance Σ_j w_j (x_j − c_j)², centroid
// coordinate = Σ w x / Σ w. Deterministic for a given seed at any thread count.
Codebook fit_codebook(std::span<const float> points, std::span<const float> weights,
                      const Tier& tier, DType dtype, const KMeansSettings& settings,
                      Backend backend);

// ---- codeword search ----
// For each of `count` vectors x ([count, d]) the index minimising ‖x − c‖², or, when `metric`
// ([d, d] row-major, symmetric positive definite) is given, (x − c)ᵀ·metric·(x − c); ties go
// to the lowest index. The hot loop at K = 4096.
void nearest_codewords(std::span<const float> vectors, std::uint64_t count,
                       const Codebook& codebook, std::span<const float> metric,
                       std::span<std::uint32_t> codes, Backend backend);

// ---- the encoded matrix ----
// codes [rows, cols/d] (one index per vector, in column order), scales [rows, cols/128] as
// values of `scale_dtype`. decoded ŵ[r, c] = codeword[codes[r, c/d]][c mod d] · scales[r, c/128]
// computed in f32 from the stored (rounded) codeword and scale.
struct VqQuantized {
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
  DType scale_dtype = DType::BF16;
  std::vector<std::uint32_t> codes;
  std::vector<float> scales;
};

enum class Metric : std::uint8_t {
  Mahalanobis,  // (w − s·c)ᵀ·(U_PP⁻¹ U_PP⁻ᵀ)·(w − s·c): the exact GPTQ cost of fixing the vector
  Euclidean,  // ‖w/s − c‖²
};
enum class ErrorUpdate : std::uint8_t {
  Exact,     // e = (w_P − q)·U_PP⁻¹ (d×d triangular solve), later columns −= e·U_P,rest
  Diagonal,  // GPTVQ: e_j = (w_j − q_j)/U_jj, no update between a vector's own columns
};
enum class ScaleRule : std::uint8_t {
  Rms,  // s = RMS of the group's current (error-updated) weights when the sweep enters it
  // Rms during the sweep, then the scales refitted with the codes fixed. With a Hessian, each
  // row's scales jointly minimise the layer objective (w − Σ_g s_g·ĉ_g)ᵀ·H·(w − Σ_g s_g·ĉ_g)
  // (ĉ_g the row's codewords in group g; H undamped, as the objective): a G×G system per row
  // (G = cols/128) solved by Cholesky in f64. A row whose system is singular, or whose rounded
  // solution would raise its objective, keeps the sweep's scales. Without a Hessian, each
  // group's s = Σ w·ĉ / Σ ĉ² on the source weights. Zero scales stay zero; every backend runs
  // the refit on the host (deterministic at any thread count).
  LeastSquares,
};

struct EncodeSettings {
  bool compensate = true;  // false: nearest codeword of each vector, no error feedback
  Metric metric = Metric::Mahalanobis;
  ErrorUpdate update = ErrorUpdate::Exact;
  ScaleRule scale_rule = ScaleRule::Rms;
};

struct EncodeResult {
  // ‖(W − Ŵ)X‖² / ‖WX‖² (tr(ΔW·H·ΔWᵀ) / tr(W·H·Wᵀ)) when a Hessian was given, else 0.
  double relative_loss = 0.0;
  intq::ErrorEnergy energy;  // Σ w², Σ (w − ŵ)²
};

// Encodes `weight` ([rows, cols] f32) with `codebook`. Throws BadInput "vq.shape" when d does
// not divide 128 or 128 does not divide cols, "vq.codebook" for a codebook of the wrong size,
// "vq.non_finite" for NaN/Inf weights (naming row and column), "vq.scale_range" for a group
// scale the scale dtype cannot hold.
// `hessian` (gptq::prepare_hessian of the module's statistics; its order moves whole d-column
// vectors, order_block = d) drives compensation; nullptr, or settings.compensate false:
// nearest codeword per vector (Euclidean on scale-normalised vectors). When `swept` ([rows,
// cols]) is given it receives the weights each vector had when it was quantized (the
// compensated targets codebook refinement fits; the source weights when not compensating).
EncodeResult encode(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                    DType scale_dtype, const Codebook& codebook,
                    const gptq::PreparedHessian* hessian, const EncodeSettings& settings,
                    Backend backend, VqQuantized& out, std::span<float> swept = {});

// ŵ into `out` [rows, cols].
void decode(const VqQuantized& quantized, const Codebook& codebook, std::span<float> out);

// ---- packing (docs/formats/vq.md) ----
// Each row's codes as one little-endian bit stream of index_bits-wide fields in uint32 words,
// code 0 in the lowest bits; a field may straddle two words. Words per row:
// tier.packed_words_per_row(cols).
void pack_codes(std::span<const std::uint32_t> codes, std::uint64_t rows, std::uint64_t cols,
                const Tier& tier, std::span<std::int32_t> out);
// Throws BadInput "vq.code_range" (naming row and position) for an index ≥ K.
void unpack_codes(std::span<const std::int32_t> packed, std::uint64_t rows, std::uint64_t cols,
                  const Tier& tier, std::span<std::uint32_t> out);

// ---- codebook refinement ----
// Re-fits each codeword with codes fixed: the weighted mean (per coordinate) of the
// scale-normalised target vectors assigned to it, accumulated over many matrices; a codeword
// nobody uses keeps its value. Call add() per encoded matrix, then refined().
class CodebookRefinement {
 public:
  explicit CodebookRefinement(const Codebook& codebook);
  // `targets` [rows, cols]: what the codes should reproduce (the compensated weights the sweep
  // quantized, or the source weights); `weights` [cols] per input column (empty: 1).
  void add(std::span<const float> targets, const VqQuantized& quantized,
           std::span<const float> weights);
  Codebook refined() const;

 private:
  Codebook codebook_;
  std::vector<double> sums_;    // [K, d]
  std::vector<double> totals_;  // [K, d]
};

}  // namespace qs::vq
