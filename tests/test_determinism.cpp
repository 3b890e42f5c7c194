// Results do not depend on thread counts: the tiled BLAS calls give the same bits under any
// oneTBB or OpenBLAS thread count (and agree with plain arithmetic), GPTQ's factorization is
// the same whatever OpenBLAS was set to, and `calibrate`, a GPTQ `quantize`, NVFP4's joint
// scale search and `eval` give byte-identical results under --threads 1 / 2,
// OPENBLAS_NUM_THREADS and `taskset -c 0`.

#include <cblas.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <cmath>
#include <random>

#include "qs/ckpt/io/file_io.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/gptq.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli_after;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();

template <typename T>
std::vector<T> random_values(std::size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> values(count);
  for (auto& value : values) value = static_cast<T>(normal(generator));
  return values;
}

// The thread settings a user's machine may have: oneTBB workers × OpenBLAS threads.
struct ThreadSetting {
  int tbb;
  int openblas;
};
constexpr ThreadSetting kThreadSettings[] = {{1, 1}, {2, 2}, {4, 1}, {1, 4}, {3, 3}};

template <typename Function>
auto under(ThreadSetting setting, const Function& function) {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, setting.tbb);
  openblas_set_num_threads(setting.openblas);
  return function();
}

TEST(DeterministicBlas, TiledGemmComputesTheProductForEveryTransposeCombination) {
  const std::uint64_t m = 300, n = 530, k = 129;  // not multiples of the tiles
  const auto a = random_values<float>(m * k, 1), b = random_values<float>(k * n, 2);
  for (auto a_op : {blas::Op::None, blas::Op::Transpose})
    for (auto b_op : {blas::Op::None, blas::Op::Transpose}) {
      const std::uint64_t lda = a_op == blas::Op::None ? k : m;
      const std::uint64_t ldb = b_op == blas::Op::None ? n : k;
      std::vector<float> c(m * n, 1.0f);
      blas::sgemm(a_op, b_op, m, n, k, 2.0f, a.data(), lda, b.data(), ldb, 0.5f, c.data(), n);
      for (std::uint64_t i = 0; i < m; i += 37)
        for (std::uint64_t j = 0; j < n; j += 41) {
          double sum = 0.0;
          for (std::uint64_t t = 0; t < k; ++t) {
            const double x = a_op == blas::Op::None ? a[i * lda + t] : a[t * lda + i];
            const double y = b_op == blas::Op::None ? b[t * ldb + j] : b[j * ldb + t];
            sum += x * y;
          }
          EXPECT_NEAR(c[i * n + j], 2.0 * sum + 0.5, 1e-3) << i << "," << j;
        }
    }
}

TEST(DeterministicBlas, GramMatrixUpperTriangleIsAtA) {
  const std::uint64_t rows = 77, n = 600;
  const auto a = random_values<double>(rows * n, 3);
  std::vector<double> c(n * n, 0.0);
  blas::add_gram_upper(rows, n, a.data(), c.data());
  blas::add_gram_upper(rows, n, a.data(), c.data());  // accumulates
  for (std::uint64_t i = 0; i < n; i += 13)
    for (std::uint64_t j = 0; j < n; j += 17) {
      double sum = 0.0;
      for (std::uint64_t t = 0; t < rows; ++t) sum += a[t * n + i] * a[t * n + j];
      EXPECT_NEAR(c[i * n + j], j >= i ? 2.0 * sum : 0.0, 1e-9) << i << "," << j;
    }
}

TEST(DeterministicBlas, ResultsAreTheSameBitsUnderEveryThreadCount) {
  const std::uint64_t m = 700, n = 900, k = 1100;
  const auto a = random_values<float>(m * k, 4), b = random_values<float>(n * k, 5);
  const auto x = random_values<double>(m * n, 6);
  std::vector<float> first_product;
  std::vector<double> first_gram;
  for (const auto setting : kThreadSettings) {
    const auto product = under(setting, [&] {
      std::vector<float> c(m * n);
      blas::sgemm(blas::Op::None, blas::Op::Transpose, m, n, k, 1.0f, a.data(), k, b.data(), k,
                  0.0f, c.data(), n);
      return c;
    });
    const auto gram = under(setting, [&] {
      std::vector<double> c(n * n, 0.0);
      blas::add_gram_upper(m, n, x.data(), c.data());
      return c;
    });
    if (first_product.empty()) {
      first_product = product;
      first_gram = gram;
      continue;
    }
    EXPECT_TRUE(product == first_product) << setting.tbb << " TBB, " << setting.openblas << " BLAS";
    EXPECT_TRUE(gram == first_gram) << setting.tbb << " TBB, " << setting.openblas << " BLAS";
  }
}

// OpenBLAS's threaded potrf / trtri give other bits than its single-threaded ones: GPTQ's
// factor, and so its codes, depended on OPENBLAS_NUM_THREADS.
TEST(DeterministicBlas, GptqFactorIgnoresTheOpenblasThreadCount) {
  // Few tokens and a direction every input shares, as real activations have: ill-conditioned
  // enough that the threaded factorization's last-bit differences survive rounding to f32.
  const std::uint64_t columns = 512, tokens = 100;
  auto inputs = random_values<double>(tokens * columns, 7);
  for (std::uint64_t t = 0; t < tokens; ++t)
    for (std::uint64_t c = 1; c < columns; ++c)
      inputs[t * columns + c] += 3.0 * inputs[t * columns];
  std::vector<double> hessian(columns * columns, 0.0);
  blas::add_gram_upper(tokens, columns, inputs.data(), hessian.data());
  for (std::uint64_t i = 0; i < columns; ++i)
    for (std::uint64_t j = 0; j < i; ++j) hessian[i * columns + j] = hessian[j * columns + i];
  std::vector<float> first;
  for (const auto setting : kThreadSettings) {
    const auto prepared = under(
        setting, [&] { return gptq::prepare_hessian(hessian, columns, tokens, gptq::Settings{}); });
    ASSERT_TRUE(prepared.fallback.empty()) << prepared.fallback;
    if (first.empty())
      first = prepared.u;
    else
      EXPECT_TRUE(prepared.u == first) << setting.tbb << " TBB, " << setting.openblas << " BLAS";
  }
}

// How a user's run may be threaded: flags, the OpenBLAS environment, CPU affinity.
struct Launch {
  const char* label;
  const char* shell_prefix;
  const char* flags;
};
constexpr Launch kLaunches[] = {
    {"threads-1", "", "--threads 1"},
    {"threads-2", "", "--threads 2"},
    {"openblas-1", "OPENBLAS_NUM_THREADS=1", ""},
    {"openblas-3", "OPENBLAS_NUM_THREADS=3", ""},
    {"one-cpu", "taskset -c 0", ""},
};

TEST(DeterministicCli, CalibrateGptqAndEvalGiveTheSameBytesHoweverThreaded) {
  ScratchDirectory scratch("determinism");
  const std::string tokens = quoted(kModel / "tokens.safetensors");
  std::string first_statistics, first_eval;
  std::map<std::string, std::string> first_checkpoint, first_nvfp4;
  const auto joint_recipe = scratch.path() / "joint.yaml";
  write_file_atomically(joint_recipe, R"(format: modelopt
rules:
  - name: a few routed experts, joint global scales
    category: routed_expert
    layers: "1"
    module: "*.experts.[0-3].*"
    action: nvfp4
    scale_method: joint
)");
  for (const auto& launch : kLaunches) {
    const auto statistics = scratch.path() / fmt::format("{}.qsc", launch.label);
    auto calibrated = run_cli_after(
        launch.shell_prefix,
        fmt::format("calibrate {} --tokens {}:calib --max-rows 6 --all-experts --out {} {}",
                    quoted(kModel), tokens, quoted(statistics), launch.flags));
    ASSERT_EQ(calibrated.exit_code, 0) << launch.label << ": " << calibrated.output;
    const auto out = scratch.path() / launch.label;
    auto quantized =
        run_cli_after(launch.shell_prefix,
                      fmt::format("quantize {} {} --scheme gptq-int4 --calib {} {}", quoted(kModel),
                                  quoted(out), quoted(statistics), launch.flags));
    ASSERT_EQ(quantized.exit_code, 0) << launch.label << ": " << quantized.output;
    // NVFP4's joint scale search compares sums over rows (a few experts: it is slow).
    const auto nvfp4 = scratch.path() / fmt::format("{}-nvfp4", launch.label);
    auto joint = run_cli_after(launch.shell_prefix,
                               fmt::format("quantize {} {} --recipe {} {}", quoted(kModel),
                                           quoted(nvfp4), quoted(joint_recipe), launch.flags));
    ASSERT_EQ(joint.exit_code, 0) << launch.label << ": " << joint.output;
    auto evaluated = run_cli_after(
        launch.shell_prefix,
        fmt::format("eval --ref {} --model {} --tokens {} --max-rows 2 --decode-steps 4 --json {}",
                    quoted(kModel), quoted(out), tokens, launch.flags));
    ASSERT_EQ(evaluated.exit_code, 0) << launch.label << ": " << evaluated.output;
    const std::string eval_json = evaluated.standard_output;
    auto checkpoint = testing::directory_contents(out);
    checkpoint.erase("quantsmith-job.json");  // its fingerprint names the statistics file
    if (first_statistics.empty()) {
      first_statistics = read_text_file(statistics);
      first_checkpoint = checkpoint;
      first_nvfp4 = testing::directory_contents(nvfp4);
      first_eval = eval_json;
      continue;
    }
    EXPECT_TRUE(read_text_file(statistics) == first_statistics) << launch.label;
    EXPECT_TRUE(checkpoint == first_checkpoint) << launch.label;
    EXPECT_TRUE(testing::directory_contents(nvfp4) == first_nvfp4) << launch.label;
    EXPECT_EQ(eval_json, first_eval) << launch.label;
  }
}

// The reported failure: a GPTQ job killed while running on several BLAS threads and resumed on
// one finished with shards of two numerical paths. Killed at several points (coreutils
// `timeout -s KILL`), resumed under other thread settings, it gives the uninterrupted bytes.
TEST(DeterministicCli, GptqKilledAndResumedUnderOtherThreadsGivesTheSameBytes) {
  ScratchDirectory scratch("determinism-resume");
  const auto statistics = scratch.path() / "stats.qsc";
  ASSERT_EQ(run_cli_after("", fmt::format("calibrate {} --tokens {}:calib --max-rows 6 "
                                          "--all-experts --out {}",
                                          quoted(kModel), quoted(kModel / "tokens.safetensors"),
                                          quoted(statistics)))
                .exit_code,
            0);
  auto job = [&](const std::filesystem::path& out) {
    return fmt::format("quantize {} {} --scheme gptq-int4 --calib {} --max-shard-size 1MB",
                       quoted(kModel), quoted(out), quoted(statistics));
  };
  const auto reference = scratch.path() / "reference";
  ASSERT_EQ(run_cli_after("OPENBLAS_NUM_THREADS=1", job(reference) + " --threads 1").exit_code, 0);
  const auto expected = testing::directory_contents(reference);
  for (const char* after : {"0.3", "0.6", "1.0"}) {
    const auto out = scratch.path() / fmt::format("killed-{}", after);
    run_cli_after(fmt::format("OPENBLAS_NUM_THREADS=3 timeout -s KILL {}", after),
                  job(out) + " --threads 2");
    auto resumed = run_cli_after("taskset -c 0", job(out) + " --resume --threads 1");
    ASSERT_EQ(resumed.exit_code, 0) << after << ": " << resumed.output;
    EXPECT_TRUE(testing::directory_contents(out) == expected) << "killed after " << after << " s";
  }
}

}  // namespace
}  // namespace qs
