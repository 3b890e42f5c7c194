// GPTQ timing on one GLM-5-size expert matrix:
// `qs_bench_gptq ROWS COLS TOKENS [cpu|cuda] [--json FILE]`
// (default 2048 6144 4096 cpu: a gate_proj with its 6144² Hessian). Prints the time of the
// Hessian preparation (factorization), of the sweep, and of GPTQ's quality report three ways:
// as it was (the explicit objective of round-to-nearest's codes and of the swept codes: four
// rows·cols² quadratic forms), as quantize() now makes it (tr(W·H·Wᵀ) once, round-to-nearest's
// error form, the swept codes' objective from the sweep's errors) and with report_rtn: false
// (tr(W·H·Wᵀ) only), and the peak RSS. Inputs are synthetic (correlated activations, Gaussian weights); timings do not
// depend on the values. Every BLAS call goes through deterministic_blas.h, as in quantsmith.

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <span>
#include <utility>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gptq_bench_support.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/gptq.h"

using qs::bench::seconds_since;

int main(int argc, char** argv) {
  std::string json_path;
  if (argc > 2 && std::string(argv[argc - 2]) == "--json") {
    json_path = argv[argc - 1];
    argc -= 2;
  }
  const std::uint64_t rows = argc > 1 ? std::stoull(argv[1]) : 2048;
  const std::uint64_t cols = argc > 2 ? std::stoull(argv[2]) : 6144;
  const std::uint64_t tokens = argc > 3 ? std::stoull(argv[3]) : 4096;
  const bool cuda = argc > 4 && std::string(argv[4]) == "cuda";
  const auto backend = cuda ? qs::gptq::Backend::Cuda : qs::gptq::Backend::Cpu;
  if (cuda && !qs::cuda_availability().usable) {
    fmt::print(stderr, "qs_bench_gptq: no GPU: {}\n", qs::cuda_availability().reason);
    return 3;
  }

  const auto [hessian, weight] = qs::bench::synthetic_layer(rows, cols, tokens);

  const qs::intq::IntScheme scheme{{4, false}, 128, qs::intq::Observer::MinMax};
  auto start = std::chrono::steady_clock::now();
  const auto prepared = qs::gptq::prepare_hessian(hessian, cols, tokens, {}, backend);
  const double prepare_s = seconds_since(start);
  qs::intq::IntQuantized out;
  start = std::chrono::steady_clock::now();
  qs::gptq::detail::static_grid(weight, rows, cols, qs::DType::BF16, scheme, out);
  const qs::intq::IntQuantized rtn = out;
  std::vector<double> row_objective(rows, 0.0);
  if (cuda)
    qs::gptq::detail::sweep_cuda(weight, scheme, prepared, out, row_objective);
  else
    qs::gptq::detail::sweep_cpu(weight, scheme, prepared, out, row_objective);
  const double sweep_s = seconds_since(start);

  // The report as it was: both objectives explicitly, on the CPU.
  start = std::chrono::steady_clock::now();
  const auto rtn_explicit = qs::gptq::detail::objective(weight, rtn, prepared);
  const auto objective = qs::gptq::detail::objective(weight, out, prepared);
  const double report_before_s = seconds_since(start);
  // As quantize() makes it now (on the GPU for cuda), with and without the baseline.
  std::vector<float> decoded(rows * cols);
  auto report_now = [&](bool baseline) {
    std::vector<std::span<const float>> forms{weight};
    if (baseline) {
      qs::intq::dequantize(rtn, decoded);
      for (std::uint64_t i = 0; i < decoded.size(); ++i) decoded[i] = weight[i] - decoded[i];
      forms.push_back(decoded);
    }
    const auto values = qs::gptq::detail::quadratic_forms(forms, rows, cols, prepared, cuda);
    qs::intq::dequantize(out, decoded);
    const double swept =
        qs::gptq::detail::swept_objective(row_objective, weight, decoded, cols, prepared);
    return std::pair{swept / values[0], baseline ? values[1] / values[0] : 0.0};
  };
  start = std::chrono::steady_clock::now();
  const auto [swept_loss, rtn_loss] = report_now(true);
  const double report_after_s = seconds_since(start);
  start = std::chrono::steady_clock::now();
  report_now(false);
  const double report_no_baseline_s = seconds_since(start);
  const double explicit_loss = objective.error / objective.reference;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  fmt::print(
      "gptq int4-g128-asym [{} x {}], {} tokens, {}: prepare {:.3f} s (damp {}), sweep {:.3f} s "
      "({:.1f} GFLOP/s of r·c² lazy updates)\n  report before (4 explicit forms) {:.3f} s, "
      "now {:.3f} s, now without baseline {:.3f} s\n  relative loss explicit {:.6e} / from the "
      "sweep {:.6e} (rel. diff {:.1e}); round-to-nearest {:.6e} / {:.6e}\n  peak RSS {:.0f} MiB "
      "({}; fixed tiles, results independent of the thread count)\n",
      rows, cols, tokens, cuda ? "cuda" : "cpu", prepare_s, prepared.damp_used, sweep_s,
      2.0 * rows * cols * cols / 2 / sweep_s / 1e9, report_before_s, report_after_s,
      report_no_baseline_s, explicit_loss, swept_loss,
      std::abs(swept_loss - explicit_loss) / explicit_loss,
      rtn_explicit.error / rtn_explicit.reference, rtn_loss, usage.ru_maxrss / 1024.0,
      qs::blas::numerics_identity());
  if (!json_path.empty()) {
    const nlohmann::ordered_json report = {{"rows", rows},
                                           {"cols", cols},
                                           {"tokens", tokens},
                                           {"backend", cuda ? "cuda" : "cpu"},
                                           {"prepare_s", prepare_s},
                                           {"sweep_s", sweep_s},
                                           {"report_before_s", report_before_s},
                                           {"report_after_s", report_after_s},
                                           {"report_no_baseline_s", report_no_baseline_s},
                                           {"expert_s", prepare_s + sweep_s},
                                           {"relative_loss", explicit_loss},
                                           {"relative_loss_from_sweep", swept_loss},
                                           {"peak_rss_mib", usage.ru_maxrss / 1024.0}};
    std::ofstream(json_path) << report.dump(2) << "\n";
  }
  return 0;
}
