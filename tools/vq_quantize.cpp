#include "vq_quantize.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/shard_scan.h"
#include "qs/ckpt/job/vq_preparation_state.h"

namespace qs::cli {

namespace {

// For the recipe without statistics (a vq rule with one tier and no compensation): codebook
// weights are then 1 and no module has an objective.
class NoStatistics final : public CalibrationStatistics {
 public:
  const CalibrationEntry* find(const std::string&) const override { return nullptr; }
  std::vector<double> second_moments(const std::string& module) const override {
    throw_bad_input("calibration.missing_module", "no statistics file was given", "", module);
  }
};

// The source's identity: its shards' names, sizes and modification times (as the executor's
// plan fingerprint takes them).
std::string source_identity(const Checkpoint& source) {
  std::string identity = source.directory().string();
  for (const auto& shard : source.shards())
    identity +=
        fmt::format("|{}:{}:{}", shard->path().filename().string(), shard->file_size(),
                    std::filesystem::last_write_time(shard->path()).time_since_epoch().count());
  return identity;
}

nlohmann::ordered_json report_json(const vq::PreparationReport& report) {
  auto codebooks = nlohmann::ordered_json::array();
  for (const auto& fit : report.codebooks)
    codebooks.push_back({{"tensor", fit.tensor},
                         {"tier", fit.tier},
                         {"vectors", fit.vectors},
                         {"refine_rounds", fit.refine_rounds},
                         {"seconds", fit.seconds}});
  return {{"codebooks", codebooks},
          {"estimate_seconds", report.estimate_seconds},
          {"estimated_error", report.estimated_error}};
}

vq::PreparationReport report_from(const nlohmann::json& json) {
  vq::PreparationReport report;
  for (const auto& fit : json.value("codebooks", nlohmann::json::array()))
    report.codebooks.push_back(
        {fit.value("tensor", ""), fit.value("tier", ""), fit.value("vectors", std::uint64_t{0}),
         fit.value("refine_rounds", std::uint32_t{0}), fit.value("seconds", 0.0)});
  report.estimate_seconds = json.value("estimate_seconds", 0.0);
  report.estimated_error = json.value("estimated_error", 0.0);
  return report;
}

double seconds_of(const std::atomic<std::uint64_t>& nanoseconds) {
  return static_cast<double>(nanoseconds.load()) / 1e9;
}

bool any_needs_statistics(const std::vector<VqCandidate>& candidates) {
  for (const auto& candidate : candidates)
    if (needs_statistics(candidate.options)) return true;
  return false;
}

}  // namespace

std::optional<VqJob> prepare_vq_job(const Checkpoint& source, const Recipe& recipe,
                                    const CalibrationStore* statistics,
                                    const VqJobOptions& options) {
  VqJob job;
  job.candidates = vq_candidates(source, recipe);
  if (job.candidates.empty()) return std::nullopt;
  if (any_needs_statistics(job.candidates) && (!statistics || options.calibrating_in_job))
    throw_bad_input(
        "plan.vq_needs_statistics",
        options.calibrating_in_job
            ? "vq rules choose tiers and fit codebooks at plan time from every layer's "
              "statistics, which --calib-tokens computes only as the job runs; calibrate first "
              "(quantsmith calibrate --all-experts) and pass --calib STATS"
            : "vq rules that compensate (GPTQ) or allocate tiers need calibration statistics: "
              "run quantsmith calibrate --all-experts and pass --calib STATS",
        recipe.source);

  const std::string fingerprint =
      xxh3_128_hex(std::string_view(options.fingerprint + "|source=" + source_identity(source)));
  const bool saves = !options.dry_run && !options.partitioned;
  if (saves)
    job.claimed.emplace(
        OutputDirectory::claim(options.output, options.mode, vq_preparation_files()));

  const auto start = std::chrono::steady_clock::now();
  if (saves && options.mode == OutputMode::Resume) {
    if (auto saved = load_vq_preparation(options.output, fingerprint)) {
      job.assignment = std::move(saved->assignment);
      job.report = report_from(saved->report);
      job.resumed = true;
      fmt::print(stderr, "quantsmith: vq: codebooks and tiers read back from {}\n",
                 (options.output / kVqPreparationFileName).string());
    }
  }
  if (!job.resumed) {
    if (options.dry_run)
      fmt::print(stderr,
                 "quantsmith: vq: --dry-run still prepares the codebooks and tiers: it reads "
                 "sampled rows of the experts' weights and the statistics\n");
    vq::PreparationSettings settings;
    settings.backend = options.device == ComputeDevice::Cuda ? vq::Backend::Cuda : vq::Backend::Cpu;
    settings.zero_non_finite = options.zero_non_finite;
    settings.progress = [](const std::string& line) {
      fmt::print(stderr, "quantsmith: {}\n", line);
    };
    NoStatistics none;
    const CalibrationStatistics& used =
        statistics ? static_cast<const CalibrationStatistics&>(*statistics) : none;
    static const vq::RoutingTable kNoRouting;
    auto prepared = vq::prepare_vq(source, recipe, job.candidates, used,
                                   statistics ? statistics->routing() : kNoRouting, settings);
    job.assignment = std::move(prepared.assignment);
    job.report = std::move(prepared.report);
    // The preparation is saved before the executor writes its job file, so a job file without
    // a preparation is a finished job (which removed it): it needs none, and a resume with
    // other inputs is refused by the executor, leaving that output as it was.
    const bool finished = output_path_exists(options.output / kJobFileName);
    if (saves && !finished)
      save_vq_preparation(options.output, fingerprint, job.assignment, report_json(job.report));
  }
  job.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return job;
}

void finish_vq_job(const VqJob& job) {
  if (job.claimed) remove_vq_preparation(job.claimed->path());
}

void print_vq_job(const VqJob& job, const QuantizeStageTimes* times) {
  const auto histogram = vq::tier_histogram(job.candidates, job.assignment);
  std::vector<std::string> tiers;  // every menu's tiers, in menu order
  for (const auto& candidate : job.candidates)
    for (const auto& tier : candidate.options.tiers)
      if (std::find(tiers.begin(), tiers.end(), tier.name) == tiers.end())
        tiers.push_back(tier.name);
  fmt::print("vq tiers per layer (modules):\n");
  for (const auto& [layer, counts] : histogram.modules) {
    std::string line = layer ? fmt::format("  layer {:>3}:", *layer) : std::string("  other    :");
    for (const auto& tier : tiers) {
      const auto found = counts.find(tier);
      line += fmt::format(" {:>6} {:<5}", found == counts.end() ? 0 : found->second, tier);
    }
    fmt::print("{}\n", line);
  }
  std::string by_tier;
  for (const auto& [tier, weights] : histogram.weights_by_tier)
    by_tier += fmt::format("{}{} {:.1f}%", by_tier.empty() ? "" : ", ", tier,
                           100.0 * static_cast<double>(weights) / histogram.weights);
  fmt::print(
      "vq: {} modules, {} weights at {:.4f} bits per weight (codes and scales; codebooks "
      "not counted); weights by tier: {}\n",
      job.candidates.size(), histogram.weights, histogram.bits_per_weight(), by_tier);
  double fit_seconds = 0.0;
  for (const auto& fit : job.report.codebooks) fit_seconds += fit.seconds;
  fmt::print(
      "vq: {} codebooks fitted in {:.2f} s, tier errors estimated in {:.2f} s, estimated "
      "error {:.4e}{}\n",
      job.report.codebooks.size(), fit_seconds, job.report.estimate_seconds,
      job.report.estimated_error, job.resumed ? " (read back from the output)" : "");
  if (times)
    fmt::print(
        "vq: encode stage seconds (summed over workers): factorization {:.2f}, sweep {:.2f}\n",
        seconds_of(times->factorization_ns), seconds_of(times->sweep_ns));
}

nlohmann::ordered_json vq_job_json(const VqJob& job, const QuantizeStageTimes* times) {
  const auto histogram = vq::tier_histogram(job.candidates, job.assignment);
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& [layer, counts] : histogram.modules)
    layers.push_back({{"layer", layer ? nlohmann::ordered_json(*layer) : nlohmann::ordered_json()},
                      {"modules", counts}});
  nlohmann::ordered_json out = {{"modules", job.candidates.size()},
                                {"weights", histogram.weights},
                                {"bits_per_weight", histogram.bits_per_weight()},
                                {"weights_by_tier", histogram.weights_by_tier},
                                {"layers", layers},
                                {"resumed", job.resumed},
                                {"preparation_seconds", job.seconds}};
  out["preparation"] = report_json(job.report);
  if (times)
    out["encode"] = {{"factorization_s", seconds_of(times->factorization_ns)},
                     {"sweep_s", seconds_of(times->sweep_ns)}};
  return out;
}

}  // namespace qs::cli
