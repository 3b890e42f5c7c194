#include "qs/quant/deterministic_blas.h"

#include <cblas.h>
#include <tbb/parallel_for.h>

#include <algorithm>

namespace qs::blas {
namespace {

// Output tiles: large enough that each single-threaded call runs near OpenBLAS's full speed
// (128 × 256 tiles ran the GPTQ objective's 2048 × 6144 × 6144 GEMM ~1.7× slower than
// 256 × 512), small enough that a model's GEMMs give every core several. Short products (a
// few tokens, decode steps) get narrower column tiles so they still spread. Only the shapes
// choose them; changing these constants changes results in the last bits.
constexpr std::uint64_t kTileRows = 256;
constexpr std::uint64_t kTileCols = 512;
constexpr std::uint64_t kShortTileCols = 128;
constexpr std::uint64_t kGramTile = 256;

std::uint64_t tile_cols_for(std::uint64_t m) { return m < kTileRows ? kShortTileCols : kTileCols; }

std::uint64_t tiles(std::uint64_t extent, std::uint64_t tile) { return (extent + tile - 1) / tile; }

CBLAS_TRANSPOSE transpose_of(Op op) { return op == Op::Transpose ? CblasTrans : CblasNoTrans; }

// Runs `tile(i0, i1, j0, j1)` for every output tile of an m × n result, in parallel.
template <typename TileFunction>
void for_each_tile(std::uint64_t m, std::uint64_t n, const TileFunction& tile) {
  use_single_threaded_blas();
  const std::uint64_t tile_cols = tile_cols_for(m);
  const std::uint64_t row_tiles = tiles(m, kTileRows), col_tiles = tiles(n, tile_cols);
  tbb::parallel_for(std::uint64_t{0}, row_tiles * col_tiles, [&](std::uint64_t index) {
    const std::uint64_t i0 = (index / col_tiles) * kTileRows;
    const std::uint64_t j0 = (index % col_tiles) * tile_cols;
    tile(i0, std::min(i0 + kTileRows, m), j0, std::min(j0 + tile_cols, n));
  });
}

// Where op(A)'s row i0 and op(B)'s column j0 start in the row-major operands.
template <typename T>
const T* a_tile(Op op, const T* a, std::uint64_t lda, std::uint64_t i0) {
  return op == Op::None ? a + i0 * lda : a + i0;
}
template <typename T>
const T* b_tile(Op op, const T* b, std::uint64_t ldb, std::uint64_t j0) {
  return op == Op::None ? b + j0 : b + j0 * ldb;
}

}  // namespace

void use_single_threaded_blas() {
  // Checked on every call, not once: anything in the process (a host program, a test) may
  // have raised it since. Setting 1 only stores the count; it never starts or stops threads.
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void sgemm(Op a_op, Op b_op, std::uint64_t m, std::uint64_t n, std::uint64_t k, float alpha,
           const float* a, std::uint64_t lda, const float* b, std::uint64_t ldb, float beta,
           float* c, std::uint64_t ldc) {
  if (m == 0 || n == 0) return;
  for_each_tile(m, n, [&](std::uint64_t i0, std::uint64_t i1, std::uint64_t j0, std::uint64_t j1) {
    cblas_sgemm(CblasRowMajor, transpose_of(a_op), transpose_of(b_op), static_cast<int>(i1 - i0),
                static_cast<int>(j1 - j0), static_cast<int>(k), alpha, a_tile(a_op, a, lda, i0),
                static_cast<int>(lda), b_tile(b_op, b, ldb, j0), static_cast<int>(ldb), beta,
                c + i0 * ldc + j0, static_cast<int>(ldc));
  });
}

void dgemm(Op a_op, Op b_op, std::uint64_t m, std::uint64_t n, std::uint64_t k, double alpha,
           const double* a, std::uint64_t lda, const double* b, std::uint64_t ldb, double beta,
           double* c, std::uint64_t ldc) {
  if (m == 0 || n == 0) return;
  for_each_tile(m, n, [&](std::uint64_t i0, std::uint64_t i1, std::uint64_t j0, std::uint64_t j1) {
    cblas_dgemm(CblasRowMajor, transpose_of(a_op), transpose_of(b_op), static_cast<int>(i1 - i0),
                static_cast<int>(j1 - j0), static_cast<int>(k), alpha, a_tile(a_op, a, lda, i0),
                static_cast<int>(lda), b_tile(b_op, b, ldb, j0), static_cast<int>(ldb), beta,
                c + i0 * ldc + j0, static_cast<int>(ldc));
  });
}

void add_gram_upper(std::uint64_t rows, std::uint64_t n, const double* a, double* c) {
  if (rows == 0 || n == 0) return;
  // Square tiles, so each is on the diagonal (one dsyrk) or wholly above it (one dgemm).
  constexpr std::uint64_t kTile = kGramTile;
  const std::uint64_t count = tiles(n, kTile);
  use_single_threaded_blas();
  tbb::parallel_for(std::uint64_t{0}, count * count, [&](std::uint64_t index) {
    const std::uint64_t bi = index / count, bj = index % count;
    if (bj < bi) return;
    const std::uint64_t i0 = bi * kTile, i1 = std::min(i0 + kTile, n);
    const std::uint64_t j0 = bj * kTile, j1 = std::min(j0 + kTile, n);
    const int lda = static_cast<int>(n);
    if (bi == bj)
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(i1 - i0),
                  static_cast<int>(rows), 1.0, a + i0, lda, 1.0, c + i0 * n + i0, lda);
    else
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(i1 - i0),
                  static_cast<int>(j1 - j0), static_cast<int>(rows), 1.0, a + i0, lda, a + j0, lda,
                  1.0, c + i0 * n + j0, lda);
  });
}

std::string numerics_identity() {
  return std::string(openblas_get_config()) + " core " + openblas_get_corename();
}

}  // namespace qs::blas
