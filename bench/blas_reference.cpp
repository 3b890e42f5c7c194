// What this machine's OpenBLAS does on the shapes of a calibrated quantization's stages, so a
// stage's GFLOP/s can be read as a fraction of what the BLAS reaches on the same shape in the
// same run (same load, same CPU): `qs_bench_blas_reference [threads] OP DIMS... [OP DIMS...]`
//   sgemm M N K    C[M,N] = A[M,K]·B[K,N]ᵀ in f32 (a Linear: tokens × out × in; GPTQ's lazy
//                  update and objective), 2·M·N·K flops
//   dsyrk N K      the upper triangle of AᵀA for A[K,N] in f64 (XᵀX over K tokens), N²·K flops
//   dpotrf N       Cholesky of an N×N SPD matrix in f64, N³/3 flops
//   dtrtri N       inverse of an N×N triangular matrix in f64, N³/3 flops
// Each operation is timed twice: `openblas`, one call with OpenBLAS's own threads (the best
// this library does on the shape), and `quantsmith`, through quantsmith's deterministic BLAS
// (qs/quant/deterministic_blas.h: fixed tiles, single-threaded calls, oneTBB across tiles),
// which is what the stages really call (potrf/trtri run single-threaded there, as in GPTQ).
// One untimed warm-up call per shape below 20 GFLOP, then one timed call. Output: one line per operation,
// `blas OP DIMS variant SECONDS s GFLOP/s`, for scripts to parse.

#include <fmt/format.h>

#include <cblas.h>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "qs/quant/deterministic_blas.h"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda,
             int* info);
}

namespace {

// Calls this large amortize their own start-up; a warm-up would only double their time.
constexpr double kNoWarmUpFlops = 20e9;

double seconds_of(const std::function<void()>& call, double flops = 0.0) {
  if (flops < kNoWarmUpFlops) call();  // warm-up: page faults, OpenBLAS buffers, thread start
  const auto start = std::chrono::steady_clock::now();
  call();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <typename T>
std::vector<T> random_values(std::uint64_t count, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::uniform_real_distribution<T> uniform(-1.0, 1.0);
  std::vector<T> values(count);
  for (auto& value : values) value = uniform(generator);
  return values;
}

// A well-conditioned SPD matrix: AᵀA/K + N·I.
std::vector<double> spd_matrix(std::uint64_t n) {
  const std::uint64_t k = std::min<std::uint64_t>(n, 256);
  const auto a = random_values<double>(k * n, 3);
  std::vector<double> c(n * n, 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(n), static_cast<int>(k),
              1.0 / static_cast<double>(k), a.data(), static_cast<int>(n), 0.0, c.data(),
              static_cast<int>(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    c[i * n + i] += static_cast<double>(n);
    for (std::uint64_t j = 0; j < i; ++j) c[i * n + j] = c[j * n + i];
  }
  return c;
}

void report(std::string_view op, const std::string& dims, std::string_view variant,
            double seconds, double flops) {
  fmt::print("blas {} {} {} {:.4f} s {:.1f} GFLOP/s\n", op, dims, variant, seconds,
             flops / seconds / 1e9);
}

void run_sgemm(int threads, std::uint64_t m, std::uint64_t n, std::uint64_t k) {
  const auto a = random_values<float>(m * k, 1), b = random_values<float>(n * k, 2);
  std::vector<float> c(m * n);
  const std::string dims = fmt::format("{}x{}x{}", m, n, k);
  const double flops = 2.0 * m * n * k;
  openblas_set_num_threads(threads);
  report("sgemm", dims, "openblas", seconds_of([&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                       static_cast<int>(n), static_cast<int>(k), 1.0f, a.data(),
                       static_cast<int>(k), b.data(), static_cast<int>(k), 0.0f, c.data(),
                       static_cast<int>(n));
         }, flops),
         flops);
  report("sgemm", dims, "quantsmith", seconds_of([&] {
           qs::blas::sgemm(qs::blas::Op::None, qs::blas::Op::Transpose, m, n, k, 1.0f, a.data(),
                           k, b.data(), k, 0.0f, c.data(), n);
         }, flops),
         flops);
}

void run_dsyrk(int threads, std::uint64_t n, std::uint64_t k) {
  const auto a = random_values<double>(k * n, 4);
  std::vector<double> c(n * n, 0.0);
  const std::string dims = fmt::format("{}x{}", n, k);
  const double flops = 1.0 * n * n * k;
  openblas_set_num_threads(threads);
  report("dsyrk", dims, "openblas", seconds_of([&] {
           cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(n),
                       static_cast<int>(k), 1.0, a.data(), static_cast<int>(n), 1.0, c.data(),
                       static_cast<int>(n));
         }),
         flops);
  report("dsyrk", dims, "quantsmith",
         seconds_of([&] { qs::blas::add_gram_upper(k, n, a.data(), c.data()); }), flops);
}

// potrf and trtri: OpenBLAS threaded, then single-threaded as GPTQ calls them.
void run_factorization(int threads, std::string_view op, std::uint64_t n) {
  const auto spd = spd_matrix(n);
  std::vector<double> factor = spd;
  const int size = static_cast<int>(n);
  int info = 0;
  dpotrf_("U", &size, factor.data(), &size, &info);
  if (info != 0) throw std::runtime_error("the reference matrix is not positive definite");
  const bool cholesky = op == "dpotrf";
  // Each timed call works on a fresh copy (both overwrite their input).
  auto timed = [&](int thread_count) {
    openblas_set_num_threads(thread_count);
    std::vector<double> work;
    auto call = [&] {
      work = cholesky ? spd : factor;
      if (cholesky)
        dpotrf_("U", &size, work.data(), &size, &info);
      else
        dtrtri_("U", "N", &size, work.data(), &size, &info);
    };
    // Copy time excluded: measure the copy alone and subtract it.
    const double copy = seconds_of([&] { work = cholesky ? spd : factor; });
    return std::max(seconds_of(call) - copy, 1e-9);
  };
  const double flops = static_cast<double>(n) * n * n / 3.0;
  const std::string dims = fmt::format("{}", n);
  report(op, dims, "openblas", timed(threads), flops);
  report(op, dims, "quantsmith", timed(1), flops);
}

std::uint64_t dimension(char** argv, int index, int argc) {
  if (index >= argc) throw std::runtime_error("missing dimension");
  return std::stoull(argv[index]);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int index = 1;
    int threads = openblas_get_num_threads();
    if (argc > 1 && std::string_view(argv[1]).find_first_not_of("0123456789") ==
                        std::string_view::npos) {
      threads = std::stoi(argv[1]);
      index = 2;
    }
    if (index >= argc) {
      fmt::print(stderr,
                 "usage: qs_bench_blas_reference [threads] (sgemm M N K | dsyrk N K | dpotrf N "
                 "| dtrtri N)...\n");
      return 2;
    }
    fmt::print("# {}; openblas threads {}\n", qs::blas::numerics_identity(), threads);
    while (index < argc) {
      const std::string_view op = argv[index++];
      if (op == "sgemm") {
        const auto m = dimension(argv, index, argc), n = dimension(argv, index + 1, argc),
                   k = dimension(argv, index + 2, argc);
        index += 3;
        run_sgemm(threads, m, n, k);
      } else if (op == "dsyrk") {
        const auto n = dimension(argv, index, argc), k = dimension(argv, index + 1, argc);
        index += 2;
        run_dsyrk(threads, n, k);
      } else if (op == "dpotrf" || op == "dtrtri") {
        run_factorization(threads, op, dimension(argv, index++, argc));
      } else {
        throw std::runtime_error(fmt::format("unknown operation '{}'", op));
      }
    }
  } catch (const std::exception& error) {
    fmt::print(stderr, "qs_bench_blas_reference: {}\n", error.what());
    return 2;
  }
  return 0;
}
