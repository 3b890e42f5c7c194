#pragma once
// BLAS calls whose results do not depend on thread counts or CPU affinity.
//
// OpenBLAS splits a GEMM or SYRK between its threads in a way that depends on how many it has
// (OPENBLAS_NUM_THREADS, the CPUs the process may use), and some of those splits change the
// order in which a result's sums are added: the same job gave different bytes under
// `taskset -c 0`. Here OpenBLAS runs single-threaded in every calling thread, and we own the
// partition: the output is cut into fixed tiles that depend only on the shapes, each tile is
// one single-threaded BLAS call over the whole reduction dimension, and oneTBB runs the tiles
// in parallel. A tile's result is therefore the same whichever thread computes it and however
// many there are. LAPACK (potrf, trtri) called after `use_single_threaded_blas()` is
// deterministic for the same reason.
//
// What still decides the bytes is the BLAS build and the CPU kernels it picked
// (`numerics_identity()`), which belong in a job's fingerprint.

#include <cstdint>
#include <string>

namespace qs::blas {

enum class Op : std::uint8_t { None, Transpose };

// Sets OpenBLAS to one thread for the whole process (every call here does it first).
void use_single_threaded_blas();

// Row-major C[m, n] = alpha · op(A) · op(B) + beta · C, op(A) [m, k], op(B) [k, n].
void sgemm(Op a_op, Op b_op, std::uint64_t m, std::uint64_t n, std::uint64_t k, float alpha,
           const float* a, std::uint64_t lda, const float* b, std::uint64_t ldb, float beta,
           float* c, std::uint64_t ldc);
void dgemm(Op a_op, Op b_op, std::uint64_t m, std::uint64_t n, std::uint64_t k, double alpha,
           const double* a, std::uint64_t lda, const double* b, std::uint64_t ldb, double beta,
           double* c, std::uint64_t ldc);

// The upper triangle (diagonal included) of the row-major C[n, n] += Aᵀ·A for A [rows, n];
// the strict lower triangle is left as it was.
void add_gram_upper(std::uint64_t rows, std::uint64_t n, const double* a, double* c);

// The BLAS library, its build and the CPU kernel set it runs ("OpenBLAS 0.3.21 ... Haswell"):
// results are reproducible for equal identities.
std::string numerics_identity();

}  // namespace qs::blas
