#include "qs/quant/vq_preparation.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/fp8_block_sources.h"
#include "qs/quant/fp8_block_quantizer.h"
#include "qs/quant/bit_allocation.h"
#include "qs/quant/blended_statistics.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq_allocation_error.h"
#include "transforms/hessian_cache.h"
#include "transforms/weight_guard.h"

namespace qs::vq {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::uint64_t name_hash(const std::string& name) {  // FNV-1a: stable across runs and builds
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const unsigned char c : name) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

// The module's seeded row sample (ascending): a different sample per module, the same for
// every tier of its menu so the estimates compare like with like.
std::vector<std::uint64_t> row_sample(const VqCandidate& candidate, std::uint64_t count,
                                      std::uint64_t seed) {
  return sample_rows(candidate.rows, count, seed ^ name_hash(candidate.module));
}

// The chosen rows of a candidate's weight as f32 [rows.size(), cols], in the order given.
// Rows of a safetensors tensor are contiguous, so each is one read. An FP8 block-scaled source
// (DeepSeek-V3) is read the same way, row by row, and each row decoded to the BF16 the quantize
// transform sees (a row's block scales are one row of the small scale grid).
class SourceRows {
 public:
  SourceRows(const Checkpoint& source, bool zero_non_finite)
      : source_(source),
        fp8_modules_(fp8_block_modules(source)),
        zero_non_finite_(zero_non_finite) {}

  std::vector<float> read(const VqCandidate& candidate,
                          std::span<const std::uint64_t> rows) const {
    const std::uint64_t row_bytes = candidate.cols * dtype_bits(candidate.dtype) / 8;
    std::vector<std::byte> bytes(rows.size() * row_bytes);
    const auto& location = source_.at(candidate.tensor);
    const auto fp8 = fp8_modules_.find(candidate.module);
    if (fp8 == fp8_modules_.end()) {
      for (std::size_t i = 0; i < rows.size(); ++i)
        location.shard->read_part(*location.info, rows[i] * row_bytes,
                                  std::span(bytes).subspan(i * row_bytes, row_bytes));
    } else {
      read_fp8_rows(fp8->second, candidate.cols, rows, bytes);
    }
    auto values = decode_weight({candidate.dtype, bytes, rows.size(), candidate.cols});
    const auto non_finite = std::count_if(values.begin(), values.end(),
                                          [](float v) { return !std::isfinite(v); });
    if (non_finite > 0 && !zero_non_finite_)
      throw_bad_input("weight.non_finite",
                      fmt::format("{} NaN/Inf values in the rows sampled for VQ codebooks and "
                                  "tiers (--nan-policy zero reads them as 0)",
                                  non_finite),
                      location.shard->path().string(), candidate.tensor);
    for (float& v : values)
      if (!std::isfinite(v)) v = 0.0f;
    return values;
  }

 private:
  // `rows` of an FP8 block-scaled weight (sources: E4M3 codes, F32 scale grid) decoded into
  // `bf16` [rows.size(), cols], each row through fp8::dequantize_to_bf16 with its scale row.
  static void read_fp8_rows(const QuantizedWeight& weight, std::uint64_t cols,
                            std::span<const std::uint64_t> rows, std::span<std::byte> bf16) {
    const TensorLocation& codes = weight.sources[0];
    const TensorLocation& grid = weight.sources[1];
    std::vector<float> scales(grid.info->element_count());
    grid.shard->read_part(*grid.info, 0, std::as_writable_bytes(std::span(scales)));
    const std::uint64_t scale_cols = fp8::scale_cols(cols);
    std::vector<std::uint8_t> row_codes(cols);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      codes.shard->read_part(*codes.info, rows[i] * cols,
                             std::as_writable_bytes(std::span(row_codes)));
      const fp8::Fp8View row{row_codes,
                             std::span<const float>(scales).subspan(
                                 rows[i] / fp8::kTileRows * scale_cols, scale_cols),
                             1, cols};
      fp8::dequantize_to_bf16(
          row, {reinterpret_cast<std::uint16_t*>(bf16.data()) + i * cols, cols});
    }
  }

  const Checkpoint& source_;
  std::map<std::string, QuantizedWeight> fp8_modules_;
  bool zero_non_finite_;
};

// diag(XᵀX) of each statistics entry, read once (a GLM-5 expert's matrix is 302 MB).
class Diagonals {
 public:
  explicit Diagonals(const CalibrationStatistics& statistics) : statistics_(statistics) {}

  // Per input column: diag(H) over its mean (all 1 without statistics or with a zero mean).
  const std::vector<float>& weights(const VqCandidate& candidate) {
    const auto key = statistics_key(statistics_, candidate.module);
    auto [it, inserted] = weights_.try_emplace(key);
    if (!inserted) return it->second;
    auto& weights = it->second;
    weights.assign(candidate.cols, 1.0f);
    if (key.empty()) return weights;
    const auto matrix = statistics_.second_moments(key);
    double mean = 0.0;
    for (std::uint64_t c = 0; c < candidate.cols; ++c) mean += matrix[c * candidate.cols + c];
    mean /= static_cast<double>(candidate.cols);
    if (!(mean > 0.0) || !std::isfinite(mean)) return weights;
    for (std::uint64_t c = 0; c < candidate.cols; ++c)
      weights[c] = static_cast<float>(matrix[c * candidate.cols + c] / mean);
    return weights;
  }

 private:
  const CalibrationStatistics& statistics_;
  std::map<std::string, std::vector<float>> weights_;
};

// The scale-normalised sub-vectors of `values` ([rows, cols]) with their coordinates' weights
// appended to `points` / `point_weights`. The scale is the group's rounded RMS, as the encoder
// computes it when the sweep enters the group; all-zero and non-finite groups give no points.
void append_points(std::span<const float> values, std::uint64_t rows, std::uint64_t cols,
                   DType scale_dtype, std::span<const float> column_weights,
                   std::vector<float>& points, std::vector<float>& point_weights) {
  for (std::uint64_t r = 0; r < rows; ++r) {
    const float* row = values.data() + r * cols;
    for (std::uint64_t first = 0; first < cols; first += kScaleGroup) {
      double sum = 0.0;
      for (std::uint64_t c = first; c < first + kScaleGroup; ++c)
        sum += static_cast<double>(row[c]) * row[c];
      const float scale = intq::round_to_dtype(
          static_cast<float>(std::sqrt(sum / static_cast<double>(kScaleGroup))), scale_dtype);
      if (!(scale > 0.0f) || !std::isfinite(scale)) continue;
      for (std::uint64_t c = first; c < first + kScaleGroup; ++c) {
        points.push_back(row[c] / scale);
        point_weights.push_back(column_weights[c]);
      }
    }
  }
}

// One codebook tensor: its tier and the candidates whose menu offers it in its scope.
struct CodebookGroup {
  std::string tensor;
  VqTier tier;
  std::vector<std::size_t> members;  // candidate indices, source order
};

gptq::Settings gptq_settings(const RecipeRule& rule, const VqTier& tier) {
  gptq::Settings settings;
  settings.damp = rule.integer.damp;
  settings.act_order = rule.integer.act_order;
  settings.min_tokens = rule.integer.min_tokens;
  settings.order_block = tier.d;  // act order moves whole vectors
  return settings;
}


// The statistics a rule's GPTQ reads: blended for few-token experts when it says blend_tokens,
// as the quantize transform does (one BlendedStatistics per distinct setting).
class RuleStatistics {
 public:
  explicit RuleStatistics(const CalibrationStatistics& statistics) : statistics_(statistics) {}
  const CalibrationStatistics& of(const RecipeRule& rule) {
    if (rule.integer.blend_tokens == 0) return statistics_;
    auto& blended = blended_[rule.integer.blend_tokens];
    if (!blended)
      blended = std::make_unique<BlendedStatistics>(statistics_, rule.integer.blend_tokens);
    return *blended;
  }

 private:
  const CalibrationStatistics& statistics_;
  std::map<std::uint64_t, std::unique_ptr<BlendedStatistics>> blended_;
};

class Preparation {
 public:
  Preparation(const Checkpoint& source, const Recipe& recipe,
              std::span<const VqCandidate> candidates, const CalibrationStatistics& statistics,
              const RoutingTable& routing, const PreparationSettings& settings)
      : source_(source),
        source_rows_(source, settings.zero_non_finite),
        recipe_(recipe),
        candidates_(candidates),
        statistics_(statistics),
        routing_(routing),
        settings_(settings),
        diagonals_(statistics),
        rule_statistics_(statistics),
        // Four prepared Hessians: an expert's gate/up (one matrix per layer under all-experts
        // statistics) and its down_proj, each for the two vector lengths of the preset menu, so
        // estimating tier by tier does not factor the layer's gate/up matrix again per expert.
        hessians_(2) {}

  VqPreparation run() {
    VqPreparation prepared;
    for (const auto& group : codebook_groups()) {
      prepared.report.codebooks.push_back(fit(group, prepared.assignment));
      for (const std::size_t m : group.members)
        codebook_names_[{m, group.tier.name}] = group.tensor;
    }
    allocate(prepared);
    return prepared;
  }

 private:
  const RecipeRule& rule_of(const VqCandidate& candidate) const {
    return recipe_.rules.at(candidate.rule_index);
  }

  // Every (tier, scope) codebook the candidates' menus need, in first-use order.
  std::vector<CodebookGroup> codebook_groups() const {
    std::vector<CodebookGroup> groups;
    for (std::size_t m = 0; m < candidates_.size(); ++m) {
      const auto& candidate = candidates_[m];
      for (const auto& tier : candidate.options.tiers) {
        const auto tensor = vq_codebook_tensor(tier, candidate.options.codebooks, candidate.layer);
        auto found = std::find_if(groups.begin(), groups.end(),
                                  [&](const auto& group) { return group.tensor == tensor; });
        if (found == groups.end()) {
          groups.push_back({tensor, tier, {}});
          found = std::prev(groups.end());
        } else if (!(found->tier == tier)) {
          throw_bad_input("recipe.vq_tier",
                          fmt::format("two tiers named {} with different d or K", tier.name),
                          recipe_.source);
        }
        found->members.push_back(m);
      }
    }
    return groups;
  }

  void progress(const std::string& line) const {
    if (settings_.progress) settings_.progress(line);
  }

  // Sub-vectors each member contributes to a codebook: an equal share of the cap (at least
  // one), so that a model with many experts samples all of them thinly rather than a few well.
  std::uint64_t vector_quota(const CodebookGroup& group) const {
    const std::uint64_t members = std::max<std::uint64_t>(group.members.size(), 1);
    return std::max<std::uint64_t>((settings_.max_codebook_vectors + members - 1) / members, 1);
  }
  // Rows a member reads to fill its quota.
  std::uint64_t fit_rows(const VqCandidate& candidate, const VqTier& tier,
                         std::uint64_t quota) const {
    const std::uint64_t per_row = std::max<std::uint64_t>(candidate.cols / tier.d, 1);
    return std::clamp<std::uint64_t>((quota + per_row - 1) / per_row, 1, settings_.sample_rows);
  }

  PreparationReport::CodebookFit fit(const CodebookGroup& group, VqAssignment& assignment) {
    PreparationReport::CodebookFit report;
    report.tensor = group.tensor;
    report.tier = group.tier.name;
    const auto start = Clock::now();
    if (group.tier.kind == VqCodebookKind::Uniform) {
      assignment.codebooks[group.tensor] = uniform_codebook(group.tier, kCodebookDtype);
      report.seconds = seconds_since(start);
      return report;
    }
    const std::uint64_t quota = vector_quota(group);
    const std::uint32_t d = group.tier.d;
    std::vector<float> points, weights;
    for (const std::size_t m : group.members) {
      const auto& candidate = candidates_[m];
      const auto sample =
          row_sample(candidate, fit_rows(candidate, group.tier, quota), settings_.seed);
      const auto values = source_rows_.read(candidate, sample);
      std::vector<float> own_points, own_weights;
      append_points(values, sample.size(), candidate.cols, candidate.dtype,
                    diagonals_.weights(candidate), own_points, own_weights);
      // More than the quota (whole rows were read): a seeded subset of the vectors.
      const std::uint64_t vectors = own_points.size() / d;
      const auto kept = sample_rows(vectors, std::min(vectors, quota),
                                    settings_.seed ^ name_hash(candidate.module) ^ d);
      for (const std::uint64_t v : kept) {
        points.insert(points.end(), own_points.begin() + v * d, own_points.begin() + (v + 1) * d);
        weights.insert(weights.end(), own_weights.begin() + v * d,
                       own_weights.begin() + (v + 1) * d);
      }
    }
    report.vectors = points.size() / d;
    progress(fmt::format("vq: fitting {} (d {}, K {}) on {} sub-vectors of {} modules",
                         group.tensor, d, group.tier.k, report.vectors, group.members.size()));
    auto codebook = fit_codebook(points, weights, group.tier, kCodebookDtype, settings_.kmeans,
                                 settings_.backend);
    for (std::uint32_t round = 0; round < refine_rounds(group); ++round) {
      progress(fmt::format("vq: refining {} (round {})", group.tensor, round + 1));
      codebook = refine(group, quota, codebook);
      ++report.refine_rounds;
    }
    assignment.codebooks[group.tensor] = std::move(codebook);
    report.seconds = seconds_since(start);
    return report;
  }

  std::uint32_t refine_rounds(const CodebookGroup& group) const {
    std::uint32_t rounds = 0;
    for (const std::size_t m : group.members)
      rounds = std::max(rounds, candidates_[m].options.refine);
    return rounds;
  }

  // One refinement round: encode every member's fit rows as the job will (GPTQ-VQ with the
  // rule's settings), then re-fit each codeword on the targets its vectors had when swept.
  Codebook refine(const CodebookGroup& group, std::uint64_t quota, const Codebook& codebook) {
    CodebookRefinement refinement(codebook);
    for (const std::size_t m : group.members) {
      const auto& candidate = candidates_[m];
      const auto sample =
          row_sample(candidate, fit_rows(candidate, group.tier, quota), settings_.seed);
      const auto values = source_rows_.read(candidate, sample);
      const auto hessian = candidate.options.compensation == VqCompensation::Gptq
                               ? prepared(candidate, group.tier)
                               : nullptr;
      auto encode_with = encode_settings(candidate.options);
      if (hessian && !hessian->fallback.empty()) encode_with.compensate = false;
      // Refinement fits codewords to the swept targets over the RMS scales they were normalised
      // by; targets over least-squares scales pull the codewords back in (vq1 KLD 0.0150 →
      // 0.0266 on the bundled model, docs/performance/vq-quality.md). The refit is the final
      // encode's.
      encode_with.scale_rule = ScaleRule::Rms;
      VqQuantized quantized;
      std::vector<float> swept(values.size());
      encode(values, sample.size(), candidate.cols, candidate.dtype, codebook, hessian.get(),
             encode_with, settings_.backend, quantized, swept);
      refinement.add(swept, quantized, diagonals_.weights(candidate));
    }
    return refinement.refined();
  }

  // The prepared Hessian the job's encode of this candidate will use (one that falls back when
  // the module has no statistics).
  std::shared_ptr<const gptq::PreparedHessian> prepared(const VqCandidate& candidate,
                                                        const VqTier& tier) {
    const auto& rule = rule_of(candidate);
    const auto& statistics = rule_statistics_.of(rule);
    const auto key = statistics_key(statistics, candidate.module);
    const auto settings = gptq_settings(rule, tier);
    return prepared_hessian(
        hessians_, statistics, key,
        fmt::format("{}|d{}|damp{}|ao{}|min{}|blend{}", key, tier.d, settings.damp,
                    settings.act_order, settings.min_tokens, rule.integer.blend_tokens),
        candidate.cols, settings, settings_.backend, nullptr);
  }

  static std::vector<double> identity(std::uint64_t cols) {
    std::vector<double> matrix(cols * cols, 0.0);
    for (std::uint64_t c = 0; c < cols; ++c) matrix[c * cols + c] = 1.0;
    return matrix;
  }

  // How often the router picked the candidate's expert, relative to its layer's mean (1 for a
  // module that is not a routed expert, or a layer the table lacks). Laplace-smoothed: an
  // expert no calibration token reached still weighs a little, since a few hundred calibration
  // sequences do not prove the router never picks it.
  double routing_weight(const VqCandidate& candidate) const {
    if (!candidate.layer || !candidate.expert) return 1.0;
    const auto found = routing_.find(*candidate.layer);
    if (found == routing_.end() || *candidate.expert >= found->second.size()) return 1.0;
    const auto& counts = found->second;
    const double mean =
        std::accumulate(counts.begin(), counts.end(), 0.0) / static_cast<double>(counts.size());
    return (static_cast<double>(counts[*candidate.expert]) + 1.0) / (mean + 1.0);
  }

  struct Estimate {
    std::vector<double> errors;  // per tier of the menu: the objective of its estimated encode
    double signal = 0.0;         // tr(W·H·Wᵀ): the module's output energy, scaled alike
  };

  // Estimated error of each tier of the candidate's menu (menu order), and its output energy,
  // both over the sampled rows scaled to the matrix, times the routing frequency (when the rule
  // weighs by it).
  Estimate estimate(std::size_t m) {
    const auto& candidate = candidates_[m];
    const auto sample = row_sample(candidate, settings_.sample_rows, settings_.seed);
    const auto values = source_rows_.read(candidate, sample);
    const auto key = statistics_key(statistics_, candidate.module);
    // A module without statistics (an expert no token reached, routed calibration) has no
    // objective to weigh: the plain weight error (H = I) stands in, times its small frequency.
    const auto held = key.empty() ? fmt::format("identity {}", candidate.cols) : key;
    if (held != hessian_key_) {
      hessian_key_ = held;
      hessian_ = key.empty() ? identity(candidate.cols) : statistics_.second_moments(key);
    }
    // allocation_error scales the sample's objective to the rows it is given (all sampled
    // here): the share of the whole matrix and the routing frequency are applied on top.
    AllocationErrorSettings settings;
    settings.sample_rows = sample.size();
    const auto& options = candidate.options;
    settings.frequency = (options.allocation_routing ? routing_weight(candidate) : 1.0) *
                         static_cast<double>(candidate.rows) / static_cast<double>(sample.size());
    // Scored as the job writes it: its encode settings on the Hessian it prepares, and the
    // output-gain correction it gives learned tiers.
    const bool as_written = options.allocation_estimate == VqAllocationEstimate::Compensated;
    if (as_written) settings.encode = encode_settings(options);
    Estimate estimate;
    for (const auto& tier : options.tiers) {
      const auto& codebook = codebooks_->at(codebook_names_.at({m, tier.name}));
      const auto job_hessian = as_written && !key.empty() ? prepared(candidate, tier) : nullptr;
      settings.correct_gain =
          as_written && options.gain_correction && tier.kind == VqCodebookKind::Learned;
      estimate.errors.push_back(allocation_error(values, sample.size(), candidate.cols,
                                                 candidate.dtype, codebook, hessian_, settings,
                                                 settings_.backend, job_hessian.get()));
    }
    const std::uint64_t cols = candidate.cols;
    double signal = 0.0;  // Σ over sampled rows of wᵀ·H·w, in a fixed order
    for (std::uint64_t r = 0; r < sample.size(); ++r) {
      const float* w = values.data() + r * cols;
      for (std::uint64_t i = 0; i < cols; ++i) {
        double row = 0.0;
        const double* h = hessian_.data() + i * cols;
        for (std::uint64_t j = 0; j < cols; ++j) row += h[j] * w[j];
        signal += row * w[i];
      }
    }
    estimate.signal = signal * settings.frequency;
    return estimate;
  }

  static bool is_output_projection(const VqCandidate& candidate) {
    return candidate.module.ends_with(".down_proj") || candidate.module.ends_with(".w2");
  }

  // The objectives of an expert's gate/up and of its down_proj live in different spaces: gate
  // and up are scored on the intermediate activations (their inputs are the normalised hidden
  // states), down on the expert's output. Summed as they are, gate/up errors dwarf down's and the
  // allocator starves down_proj (on the bundled model it put every 1-bit tier there, and the
  // output's KLD suffered). A relative error of gate/up carries through the activation and
  // down_proj to about the same relative error of the expert's output, so gate/up errors are
  // taken relative to their own output energy and scaled by the expert's output energy (its
  // down_proj's): every error of one expert is then in its output space.
  void to_output_space(std::span<const std::size_t> members,
                       std::vector<Estimate>& estimates) const {
    std::map<std::pair<std::uint32_t, std::uint32_t>, double> output_energy;  // (layer, expert)
    for (std::size_t i = 0; i < members.size(); ++i) {
      const auto& candidate = candidates_[members[i]];
      if (candidate.layer && candidate.expert && is_output_projection(candidate))
        output_energy[{*candidate.layer, *candidate.expert}] = estimates[i].signal;
    }
    for (std::size_t i = 0; i < members.size(); ++i) {
      const auto& candidate = candidates_[members[i]];
      if (!candidate.layer || !candidate.expert || is_output_projection(candidate)) continue;
      const auto found = output_energy.find({*candidate.layer, *candidate.expert});
      if (found == output_energy.end() || !(estimates[i].signal > 0.0)) continue;
      const double scale = found->second / estimates[i].signal;
      for (auto& error : estimates[i].errors) error *= scale;
    }
  }

  // Per allocating rule, one knapsack over its modules (gate/up of an expert one item); pinned
  // rules give every module their one tier.
  void allocate(VqPreparation& prepared) {
    codebooks_ = &prepared.assignment.codebooks;
    auto& assignment = prepared.assignment;
    std::map<std::size_t, std::vector<std::size_t>> allocating;  // rule → candidates
    for (std::size_t m = 0; m < candidates_.size(); ++m) {
      const auto& candidate = candidates_[m];
      if (candidate.pinned) {
        assign(assignment, m, *candidate.pinned);
        continue;
      }
      allocating[candidate.rule_index].push_back(m);
    }
    const auto start = Clock::now();
    for (const auto& [rule_index, members] : allocating) {
      const auto& options = candidates_[members.front()].options;
      std::vector<alloc::Item> items;
      std::vector<std::vector<std::size_t>> item_members;
      std::map<std::string, std::size_t> item_of_tie;
      std::optional<std::uint32_t> layer_in_progress;
      std::vector<Estimate> estimates;
      for (const std::size_t m : members) {
        const auto& candidate = candidates_[m];
        if (candidate.layer != layer_in_progress) {
          layer_in_progress = candidate.layer;
          progress(fmt::format(
              "vq: estimating tier errors of {}",
              candidate.layer ? fmt::format("layer {}", *candidate.layer) : candidate.module));
        }
        estimates.push_back(estimate(m));
      }
      if (options.allocation_output_space) to_output_space(members, estimates);
      for (std::size_t i = 0; i < members.size(); ++i) {
        const std::size_t m = members[i];
        const auto& candidate = candidates_[m];
        auto [it, inserted] = item_of_tie.try_emplace(candidate.tie, items.size());
        if (inserted) {
          alloc::Item item;
          item.name = candidate.tie;
          item.choices.resize(options.tiers.size());
          items.push_back(std::move(item));
          item_members.emplace_back();
        }
        auto& item = items[it->second];
        item_members[it->second].push_back(m);
        const auto& errors = estimates[i].errors;
        const std::uint64_t weights = candidate.rows * candidate.cols;
        item.weights += weights;
        for (std::size_t t = 0; t < options.tiers.size(); ++t) {
          item.choices[t].bits += static_cast<double>(weights) *
                                  options.tiers[t].bits_per_weight(dtype_bits(candidate.dtype));
          item.choices[t].error += errors[t];
        }
      }
      std::uint64_t weights = 0;
      for (const auto& item : items) weights += item.weights;
      const double target = options.target_bpw.value_or(0.0);
      progress(fmt::format("vq: allocating {} items of rule '{}' for {} bits per weight",
                           items.size(), recipe_.rules.at(rule_index).name, target));
      const auto allocation = alloc::allocate(items, target * static_cast<double>(weights));
      prepared.report.estimated_error += allocation.error;
      for (std::size_t i = 0; i < items.size(); ++i)
        for (const std::size_t m : item_members[i])
          assign(assignment, m, options.tiers[allocation.tiers[i]]);
    }
    prepared.report.estimate_seconds = seconds_since(start);
  }

  void assign(VqAssignment& assignment, std::size_t m, const VqTier& tier) const {
    const auto& candidate = candidates_[m];
    assignment.tier_of[candidate.module] = tier;
    assignment.codebook_of[candidate.module] = codebook_names_.at({m, tier.name});
  }

  static constexpr DType kCodebookDtype = DType::F16;

  const Checkpoint& source_;
  SourceRows source_rows_;
  const Recipe& recipe_;
  std::span<const VqCandidate> candidates_;
  const CalibrationStatistics& statistics_;
  const RoutingTable& routing_;
  const PreparationSettings& settings_;
  Diagonals diagonals_;
  RuleStatistics rule_statistics_;
  HessianCache hessians_;
  std::map<std::pair<std::size_t, std::string>, std::string> codebook_names_;  // (m, tier) →
  const std::map<std::string, Codebook>* codebooks_ = nullptr;
  std::string hessian_key_;  // the statistics entry hessian_ holds
  std::vector<double> hessian_;
};

}  // namespace

EncodeSettings encode_settings(const VqOptions& options) {
  EncodeSettings settings;
  settings.compensate = options.compensation == VqCompensation::Gptq;
  settings.metric =
      options.metric == VqMetricChoice::Euclidean ? Metric::Euclidean : Metric::Mahalanobis;
  settings.update =
      options.update == VqUpdateChoice::Diagonal ? ErrorUpdate::Diagonal : ErrorUpdate::Exact;
  settings.scale_rule = options.refit_scales ? ScaleRule::LeastSquares : ScaleRule::Rms;
  return settings;
}

VqPreparation prepare_vq(const Checkpoint& source, const Recipe& recipe,
                         std::span<const VqCandidate> candidates,
                         const CalibrationStatistics& statistics, const RoutingTable& routing,
                         const PreparationSettings& settings) {
  return Preparation(source, recipe, candidates, statistics, routing, settings).run();
}

TierHistogram tier_histogram(std::span<const VqCandidate> candidates,
                             const VqAssignment& assignment) {
  TierHistogram histogram;
  for (const auto& candidate : candidates) {
    const auto found = assignment.tier_of.find(candidate.module);
    if (found == assignment.tier_of.end()) continue;
    const auto& tier = found->second;
    ++histogram.modules[candidate.layer][tier.name];
    const std::uint64_t weights = candidate.rows * candidate.cols;
    histogram.weights_by_tier[tier.name] += weights;
    histogram.weights += weights;
    histogram.bits +=
        static_cast<double>(weights) * tier.bits_per_weight(dtype_bits(candidate.dtype));
  }
  return histogram;
}

}  // namespace qs::vq
