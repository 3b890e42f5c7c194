#pragma once
// GPTQ (docs/algorithms/gptq.md): integer codes chosen column by column so that each column's
// rounding error is compensated by the columns not yet quantized, weighted by the inverse Hessian
// of the layer's inputs, H = XᵀX (from `quantsmith calibrate`).
//
// Our choices, where the tools differ (gptq.md, "Choices" and "Our choices"):
//  * static groups: every group's scale and zero point come from the original weight (dead
//    columns zeroed) with the same observer as round-to-nearest (llm-compressor, MoE-Quant), so
//    the grid is the compressed-tensors grid and no g_idx is needed;
//  * static activation order (act_order): columns in order of decreasing diag(H), groups stay
//    on the original columns;
//  * the factorization in f64: U, the upper Cholesky factor of H⁻¹, is computed as
//    U = J·chol(J·H·J)⁻¹·J (J reverses the order) — one potrf and one trtri instead of
//    potrf + potri + potrf, and H⁻¹ is never formed;
//  * the sweep in f32 with lazy block updates of 128 columns; codes come straight out of the
//    sweep (never re-derived from a dequantized weight), and the error fed back is that of the
//    value a consumer decodes, (q − zp)·s rounded to the scale dtype;
//  * damping: λ = damp · mean(diag H); when Cholesky fails it retries at 3×, 10×, 30×, ... the
//    fraction up to 1.0, then gives up and the module falls back to round-to-nearest (reported
//    with the reason, never silently).
// A prepared Hessian (order, dead columns, U) depends only on H, so all matrices calibrated on
// the same inputs share one: under all-experts calibration that is every routed expert's
// gate_proj and up_proj of a layer (one factorization per layer instead of 2·E).

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qs/quant/int_quantizer.h"

namespace qs::gptq {

using intq::Backend;

struct Settings {
  double damp = 0.01;           // fraction of the mean diagonal added to it
  bool act_order = true;        // columns in order of decreasing diag(H)
  std::uint64_t min_tokens = 0;  // fewer calibration token rows: round-to-nearest
  // act_order moves runs of this many columns as one, ordered by the sum of their diag(H),
  // columns in their original order inside (NVFP4: 16, so a block's scale is fixed once,
  // when the sweep enters it, and its columns stay one contiguous block in the layout).
  std::uint32_t order_block = 1;
};

inline constexpr int kLazyBlock = 128;  // columns swept before one lazy GEMM update

struct PreparedHessian {
  std::uint64_t columns = 0;
  std::uint64_t tokens = 0;
  std::vector<std::uint32_t> order;  // processing position → original column
  std::vector<std::uint8_t> dead;    // original column had diag(H) = 0 (its weights are zeroed)
  std::vector<float> u;              // [columns, columns], upper triangle, processing order
  std::vector<float> hessian;        // H as given (f32, original order), for the objective
  double damp_used = 0.0;            // the damping fraction that factored
  double damping = 0.0;              // λ = damp_used · mean diag(H), added to diag(H) for U
  std::string fallback;              // non-empty: why this Hessian cannot drive GPTQ
};

// Throws BadInput "calibration.non_finite" for NaN/Inf in the statistics. A Hessian that does
// not factor even at damping 1.0, or with fewer than settings.min_tokens tokens, comes back
// with `fallback` set.
// The factorization runs on the GPU (cuSOLVER potrf + trtri) for Backend::Cuda.
PreparedHessian prepare_hessian(std::span<const double> second_moments, std::uint64_t columns,
                                std::uint64_t tokens, const Settings& settings,
                                Backend backend = Backend::Cpu);

struct Result {
  // The GPTQ objective ‖(W − Ŵ)X‖² = tr(ΔW·H·ΔWᵀ), relative to ‖WX‖² = tr(W·H·Wᵀ), for the
  // codes written and for round-to-nearest on the same grid.
  double relative_loss = 0.0;
  double rtn_relative_loss = 0.0;
  bool rtn_computed = false;  // false: the baseline was not asked for (rtn_relative_loss 0)
  intq::ErrorEnergy energy;  // plain weight error Σ (w − ŵ)², as for round-to-nearest
  std::string fallback;      // non-empty: round-to-nearest was written, and why
};

// Quantizes `weight` ([rows, cols] f32, the source values; several matrices sharing the
// Hessian may be stacked as rows) into `out` with scales in `scale_dtype`. The swept codes'
// objective comes from the sweep (swept_objective); `rtn_baseline` false skips the
// round-to-nearest objective (one rows·cols² SGEMM) unless round-to-nearest is what is written.
Result quantize(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                DType scale_dtype, const intq::IntScheme& scheme, const PreparedHessian& hessian,
                Backend backend, intq::IntQuantized& out, bool rtn_baseline = true);

namespace detail {
// The group parameters of the static grid and the round-to-nearest codes on it.
void static_grid(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                 DType scale_dtype, const intq::IntScheme& scheme, intq::IntQuantized& out);
// The column sweep: fills out.codes given out.scales / out.zeros (the static grid). When
// `row_objective` ([rows], zeroed) is given, each row's Σ e_j² (e_j the scaled error fed
// forward) is added to it in processing order: that is the row's tr(ΔW·H_λ·ΔWᵀ) for the damped
// Hessian H_λ that U factors (swept_objective).
void sweep_cpu(std::span<const float> weight, const intq::IntScheme& scheme,
               const PreparedHessian& hessian, intq::IntQuantized& out,
               std::span<double> row_objective = {});
// One kernel per 128-column block (a thread per row, the block of U in shared memory) and one
// cuBLAS SGEMM for the lazy update.
void sweep_cuda(std::span<const float> weight, const intq::IntScheme& scheme,
                const PreparedHessian& hessian, intq::IntQuantized& out,
                std::span<double> row_objective = {});
// U with Uᵀ·U = A⁻¹ for `reversed` = J·A·J (row-major n×n, overwritten): false when A is not
// positive definite.
bool inverse_cholesky_upper_cpu(std::vector<double>& reversed, std::uint64_t n,
                                std::vector<float>& u);
bool inverse_cholesky_upper_cuda(std::vector<double>& reversed, std::uint64_t n,
                                 std::vector<float>& u);
// tr(ΔW·H·ΔWᵀ) for ŵ decoded from `quantized`, and tr(W·H·Wᵀ).
struct Objective {
  double error = 0.0;
  double reference = 0.0;
};
Objective objective(std::span<const float> weight, const intq::IntQuantized& quantized,
                    const PreparedHessian& hessian);
// The same for any decoded [rows, cols] matrix.
Objective objective_of_decoded(std::span<const float> weight, std::span<const float> decoded,
                               std::uint64_t rows, std::uint64_t cols,
                               const PreparedHessian& hessian);
// tr(M·H·Mᵀ) for one [rows, cols] matrix M (one fixed-tile SGEMM, any thread count).
double quadratic_form(std::span<const float> matrix, std::uint64_t rows, std::uint64_t cols,
                      const PreparedHessian& hessian);
// The same for each matrix on the GPU (H uploaded once, cuBLAS SGEMM): the report of GPTQ
// under Backend::Cuda. Agrees with the CPU's to f32 rounding, not bit for bit.
std::vector<double> quadratic_forms_cuda(std::span<const std::span<const float>> matrices,
                                         std::uint64_t rows, std::uint64_t cols,
                                         const PreparedHessian& hessian);
// quadratic_form of each matrix, on the GPU when `cuda`.
std::vector<double> quadratic_forms(std::span<const std::span<const float>> matrices,
                                    std::uint64_t rows, std::uint64_t cols,
                                    const PreparedHessian& hessian, bool cuda);
// tr(ΔW·H·ΔWᵀ) of the swept codes from the sweep's own errors: Σ_r row_objective[r] is the
// objective under H_λ = H + λ·I (dead columns' diagonal set to 1 first), so λ·‖ΔW‖² over all
// columns and ‖ΔW‖² over dead ones come off. `live` is the swept weight (dead columns zeroed).
double swept_objective(std::span<const double> row_objective, std::span<const float> live,
                       std::span<const float> decoded, std::uint64_t cols,
                       const PreparedHessian& hessian);
}  // namespace detail

}  // namespace qs::gptq
