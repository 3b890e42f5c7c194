// GPTQ-VQ encode timing on real-size GLM-5 expert projections:
// `qs_bench_vq [--tiers vq1,vq2,vq3,int1] [--shapes gate,down] [--tokens 512] [--cuda]
//              [--reference-rows 32] [--refit] [--json FILE]`
// For each shape (gate/up [2048 × 6144], down [6144 × 2048]) and tier: the Hessian factorization
// (prepare_hessian with order_block = d), the codebook fit (fit_codebook, once per tier, on
// at most 2^17 sub-vectors of the first shape, as the quantize job samples), the encode (sweep +
// codeword search + the relative-loss report), its GFLOP/s, and the peak RSS; the reference against
// the CPU sweep on the first rows (bit-identical, and how much slower); then the whole of GLM-5's
// routed experts extrapolated: 75 MoE layers × 256 experts × 3 projections = 57,600 matrices, one
// gate/up factorization per layer and tier dimension, one per expert for down_proj (its inputs
// differ per expert). Inputs are synthetic (Gaussian weights; the Hessian of correlated activations
// of `tokens` rows): timings do not depend on the values. --refit encodes with
// ScaleRule::LeastSquares (the group scales refitted in H's metric after the sweep).

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gptq_bench_support.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/vq.h"

namespace {

using qs::bench::seconds_since;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kLayers = 75, kExperts = 256;

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
  return parts;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Scale-normalised sub-vectors of the weight, each 128-column group divided by its RMS: what the
// shared codebooks are fitted on.
std::vector<float> normalised_vectors(const std::vector<float>& weight, std::uint64_t rows,
                                      std::uint64_t cols, std::uint64_t sample_rows) {
  std::vector<float> points(sample_rows * cols);
  for (std::uint64_t r = 0; r < sample_rows; ++r) {
    const std::uint64_t source = r * (rows / sample_rows);
    for (std::uint64_t g = 0; g < cols / 128; ++g) {
      double sum = 0.0;
      for (std::uint64_t c = g * 128; c < (g + 1) * 128; ++c)
        sum += double(weight[source * cols + c]) * weight[source * cols + c];
      const float rms = static_cast<float>(std::sqrt(sum / 128.0));
      for (std::uint64_t c = g * 128; c < (g + 1) * 128; ++c)
        points[r * cols + c] = rms > 0.0f ? weight[source * cols + c] / rms : 0.0f;
    }
  }
  return points;
}

struct Shape {
  std::string name;
  std::uint64_t rows, cols;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> tier_names{"vq1", "vq2", "vq3", "int1"};
  std::vector<std::string> shape_names{"gate", "down"};
  std::uint64_t tokens = 512, reference_rows = 32;
  bool cuda = false;
  qs::vq::EncodeSettings encode_settings;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (flag == "--tiers")
      tier_names = split(value());
    else if (flag == "--shapes")
      shape_names = split(value());
    else if (flag == "--tokens")
      tokens = std::stoull(value());
    else if (flag == "--reference-rows")
      reference_rows = std::stoull(value());
    else if (flag == "--cuda")
      cuda = true;
    else if (flag == "--refit")
      encode_settings.scale_rule = qs::vq::ScaleRule::LeastSquares;
    else if (flag == "--json")
      json_path = value();
    else {
      fmt::print(stderr, "qs_bench_vq: unknown flag {}\n", flag);
      return 2;
    }
  }
  if (cuda && !qs::cuda_availability().usable) {
    fmt::print(stderr, "qs_bench_vq: no GPU: {}\n", qs::cuda_availability().reason);
    return 3;
  }
  const auto backend = cuda ? qs::vq::Backend::Cuda : qs::vq::Backend::Cpu;
  nlohmann::ordered_json report = {
      {"backend", cuda ? "cuda" : "cpu"},
      {"tokens", tokens},
      {"refit_scales", encode_settings.scale_rule == qs::vq::ScaleRule::LeastSquares},
      {"blas", qs::blas::numerics_identity()},
      {"runs", nlohmann::json::array()}};
  // Per tier: seconds for one gate/up encode, one gate/up factorization, one down encode + its
  // factorization, for the extrapolation.
  std::map<std::string, std::map<std::string, double>> per_tier;
  std::map<std::string, qs::vq::Codebook> codebooks;

  for (const auto& shape_name : shape_names) {
    const Shape shape =
        shape_name == "down" ? Shape{"down", 6144, 2048} : Shape{"gate", 2048, 6144};
    const auto layer = qs::bench::synthetic_layer(shape.rows, shape.cols, tokens);
    for (const auto& tier_name : tier_names) {
      const auto tier = qs::preset_vq_tier(tier_name);
      if (!tier) {
        fmt::print(stderr, "qs_bench_vq: unknown tier {}\n", tier_name);
        return 2;
      }
      qs::gptq::Settings settings;
      settings.order_block = tier->d;
      auto start = Clock::now();
      const auto hessian =
          qs::gptq::prepare_hessian(layer.hessian, shape.cols, tokens, settings, backend);
      const double prepare_s = seconds_since(start);

      // One codebook per tier for the whole model (fitted once, on the first shape's sample).
      start = Clock::now();
      if (!codebooks.contains(tier_name)) {
        if (tier->kind == qs::VqCodebookKind::Uniform) {
          codebooks[tier_name] = qs::vq::uniform_codebook(*tier);
        } else {
          // As the quantize job samples: at most 2^17 sub-vectors, k-means weights diag(H) of
          // each coordinate's input column over its mean.
          const std::uint64_t sample_rows =
              std::min<std::uint64_t>(shape.rows, (std::uint64_t{1} << 17) * tier->d / shape.cols);
          const auto points = normalised_vectors(layer.weight, shape.rows, shape.cols, sample_rows);
          double mean = 0.0;
          for (std::uint64_t c = 0; c < shape.cols; ++c)
            mean += layer.hessian[c * shape.cols + c] / double(shape.cols);
          std::vector<float> weights(points.size());
          for (std::uint64_t i = 0; i < weights.size(); ++i)
            weights[i] = static_cast<float>(
                layer.hessian[(i % shape.cols) * shape.cols + i % shape.cols] / mean);
          codebooks[tier_name] =
              qs::vq::fit_codebook(points, weights, *tier, qs::DType::F16, {}, backend);
        }
      }
      const qs::vq::Codebook& codebook = codebooks.at(tier_name);
      const double fit_s = seconds_since(start);

      qs::vq::VqQuantized out;
      start = Clock::now();
      const auto result = qs::vq::encode(layer.weight, shape.rows, shape.cols, qs::DType::BF16,
                                         codebook, &hessian, encode_settings, backend, out);
      const double encode_s = seconds_since(start);
      // The report's share: tr(W·H·Wᵀ), one rows·cols² SGEMM.
      start = Clock::now();
      qs::gptq::detail::quadratic_forms(std::vector<std::span<const float>>{layer.weight},
                                        shape.rows, shape.cols, hessian, cuda);
      const double report_s = seconds_since(start);

      // Flops: the search (K codewords × (2d + 1) per vector), each vector's y = M·x (2d²), the
      // lazy and in-block updates (rows·cols², one multiply-add per U entry above the diagonal)
      // and the report's SGEMM (2·rows·cols²).
      const double vectors = double(shape.rows) * shape.cols / tier->d;
      const double search_flops = vectors * tier->k * (2.0 * tier->d + 1.0);
      const double update_flops = double(shape.rows) * shape.cols * shape.cols;
      const double report_flops = 2.0 * shape.rows * shape.cols * shape.cols;
      const double gflops =
          (search_flops + update_flops + 2.0 * vectors * tier->d * tier->d + report_flops) /
          encode_s / 1e9;

      // Reference against the CPU on the first rows (rows never interact).
      double reference_s = 0.0, cpu_slice_s = 0.0;
      bool identical = true;
      if (reference_rows > 0 && !cuda) {
        const std::uint64_t rows = std::min(reference_rows, shape.rows);
        const std::span<const float> slice(layer.weight.data(), rows * shape.cols);
        qs::vq::VqQuantized a, b;
        start = Clock::now();
        qs::vq::encode(slice, rows, shape.cols, qs::DType::BF16, codebook, &hessian,
                       encode_settings, qs::vq::Backend::Reference, a);
        reference_s = seconds_since(start);
        start = Clock::now();
        qs::vq::encode(slice, rows, shape.cols, qs::DType::BF16, codebook, &hessian,
                       encode_settings, qs::vq::Backend::Cpu, b);
        cpu_slice_s = seconds_since(start);
        identical = a.codes == b.codes &&
                    std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * 4) == 0;
      }
      fmt::print(
          "{:4s} [{} x {}] {:5s} (d {}, K {}): prepare {:.2f} s, codebook fit {:.2f} s, encode "
          "{:.2f} s (report SGEMM {:.2f} s of it; {:.1f} GFLOP/s, search {:.0f} GFLOP), rel. "
          "loss {:.4e}, SNR {:.2f} dB; reference {} rows {:.2f} s vs cpu {:.2f} s ({}); peak RSS "
          "{:.0f} MiB\n",
          shape.name, shape.rows, shape.cols, tier_name, tier->d, tier->k, prepare_s, fit_s,
          encode_s, report_s, gflops, search_flops / 1e9, result.relative_loss,
          10.0 * std::log10(result.energy.signal / result.energy.error), reference_rows,
          reference_s, cpu_slice_s, identical ? "identical" : "DIFFERENT", peak_rss_mib());
      std::fflush(stdout);
      per_tier[tier_name][shape.name + "_encode_s"] = encode_s;
      per_tier[tier_name][shape.name + "_prepare_s"] = prepare_s;
      per_tier[tier_name]["fit_s"] += fit_s;
      report["runs"].push_back({{"shape", shape.name},
                                {"rows", shape.rows},
                                {"cols", shape.cols},
                                {"tier", tier_name},
                                {"prepare_s", prepare_s},
                                {"codebook_fit_s", fit_s},
                                {"encode_s", encode_s},
                                {"report_s", report_s},
                                {"gflops", gflops},
                                {"relative_loss", result.relative_loss},
                                {"reference_rows", reference_rows},
                                {"reference_s", reference_s},
                                {"cpu_slice_s", cpu_slice_s},
                                {"reference_identical", identical},
                                {"peak_rss_mib", peak_rss_mib()}});
    }
  }
  // GLM-5: per layer 256 experts' gate and up (one shared factorization) and 256 downs (one
  // factorization each); uniform tier everywhere.
  for (const auto& [tier_name, t] : per_tier) {
    if (!t.contains("gate_encode_s") || !t.contains("down_encode_s")) continue;
    const double per_layer = t.at("gate_prepare_s") + 2.0 * kExperts * t.at("gate_encode_s") +
                             kExperts * (t.at("down_prepare_s") + t.at("down_encode_s"));
    const double hours = kLayers * per_layer / 3600.0;
    fmt::print("GLM-5 all {} expert projections at {}: {:.1f} h on this {} ({:.0f} s per layer)\n",
               kLayers * kExperts * 3, tier_name, hours, cuda ? "GPU" : "CPU", per_layer);
    report["extrapolation"][tier_name] = {{"hours", hours}, {"per_layer_s", per_layer}};
  }
  fmt::print("peak RSS {:.0f} MiB; {}\n", peak_rss_mib(), qs::blas::numerics_identity());
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  return 0;
}
