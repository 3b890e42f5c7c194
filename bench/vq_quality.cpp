// The VQ quality study (docs/performance/vq-quality.md): the bundled model's routed experts
// fake-quantized in memory, each configuration evaluated against the BF16 model with
// `quantsmith eval`'s code (run::evaluate: mean KLD ± standard error, same top-1) and the summed
// layer objective Σ tr(ΔW·H·ΔWᵀ) of the routed experts.
//
// qs_bench_vq_quality MODEL STATS TOKENS[:TENSOR] [--rows N] [--only A,B,...] [--json FILE]
//                     [--fit-vectors N] [--target-bpw X]
//   STATS: `quantsmith calibrate --all-experts` of MODEL; TOKENS: held-out rows (first N used,
//   default 64). --only runs the named configurations (default: all; see `--list`).
//
// Configurations: uniform VQ tiers (vq1, vq2, vq3) with and without GPTQ compensation beside the
// scalar baselines of the same size (INT2/INT3 asymmetric g128 GPTQ through gptq::quantize; the
// 1-bit sign × group-scale scalar, tier int1, compensated); mixed tiers by the allocator
// (alloc::allocate over vq1/vq2/vq3, and over int1/int2/int3) at --target-bpw (1.90) beside
// uniform vq2, with the spine BF16 or INT4 g128 GPTQ; ablations of the encoder on vq1/vq2
// (diagonal update, Euclidean metric, codebook refinement rounds, least-squares scales); and the
// investigation of output shrinkage (group scales × 1 / output gain, vq::correct_output_gain;
// least-squares scales after a refinement round; other vector lengths at the same bits).
// Codebooks are shared per tier across the model, fitted with vq::fit_codebook weighted by
// diag(H).

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "qs/ckpt/core/error.h"
#include "qs/quant/bit_allocation.h"
#include "qs/quant/int_group.h"
#include "qs/quant/int_quantizer.h"
#include "qs/quant/vq_allocation_error.h"
#include "qs/quant/vq_gain_correction.h"
#include "qs/run/evaluation.h"
#include "vq_quality_model.h"

namespace qs::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Options {
  std::string model, statistics, tokens;
  std::uint64_t rows = 64;
  std::set<std::string> only;
  std::string json;
  std::uint64_t fit_vectors = 1u << 18;
  double target_bpw = 1.90;
};

// How the routed experts of one configuration are quantized.
struct Configuration {
  std::string name;
  std::string group;        // table it belongs to
  std::string description;  // one line for the table
  // VQ-layout tiers (vq1 … int3): one tier for all, or a menu the allocator chooses from.
  std::vector<std::string> tiers;
  int gptq_bits = 0;  // > 0: scalar GPTQ INT`bits` asymmetric g128 instead of VQ
  vq::EncodeSettings settings;
  int refine = 0;           // codebook refinement rounds on the compensated targets
  bool spine_int4 = false;  // the spine Linears INT4 g128 GPTQ too
  // Every group scale of a module × tr(W·H·Wᵀ) / tr(Ŵ·H·Wᵀ) (rounded to BF16 again): undoes
  // the shrinkage of the experts' outputs (vq::correct_output_gain).
  bool unshrink = false;
};

struct Outcome {
  Configuration configuration;
  double bpw = 0.0;
  run::DivergenceReport divergence;
  double objective = 0.0, reference = 0.0;  // Σ tr(ΔW·H·ΔWᵀ), Σ tr(W·H·Wᵀ) of routed experts
  double energy = 0.0;     // Σ tr(Ŵ·H·Ŵᵀ): the decoded experts' output energy
  std::string allocation;  // tier histogram of an allocated configuration
  double encode_s = 0.0, eval_s = 0.0;
};

std::vector<Configuration> configurations() {
  std::vector<Configuration> list;
  const auto add = [&](std::string name, std::string group, std::string description,
                       std::vector<std::string> tiers, auto&& adjust) {
    Configuration configuration{std::move(name), std::move(group), std::move(description),
                                std::move(tiers)};
    adjust(configuration);
    list.push_back(std::move(configuration));
  };
  const auto none = [](Configuration&) {};
  const auto plain = [](Configuration& c) { c.settings.compensate = false; };
  // Uniform tiers beside their scalar baselines.
  add("int1", "uniform", "1-bit scalar sign × group scale, GPTQ", {"int1"}, none);
  add("int1-plain", "uniform", "1-bit scalar sign × group scale, no compensation", {"int1"}, plain);
  add("vq1", "uniform", "VQ d8/K256, GPTQ-VQ", {"vq1"}, none);
  add("vq1-plain", "uniform", "VQ d8/K256, nearest codeword", {"vq1"}, plain);
  add("int2-gptq", "uniform", "INT2 asymmetric g128, GPTQ", {},
      [](Configuration& c) { c.gptq_bits = 2; });
  add("int2", "uniform", "2-bit scalar uniform codebook × group RMS scale, GPTQ", {"int2"}, none);
  add("vq2", "uniform", "VQ d4/K256, GPTQ-VQ", {"vq2"}, none);
  add("vq2-plain", "uniform", "VQ d4/K256, nearest codeword", {"vq2"}, plain);
  add("int3-gptq", "uniform", "INT3 asymmetric g128, GPTQ", {},
      [](Configuration& c) { c.gptq_bits = 3; });
  add("int3", "uniform", "3-bit scalar uniform codebook × group RMS scale, GPTQ", {"int3"}, none);
  add("vq3", "uniform", "VQ d4/K4096, GPTQ-VQ", {"vq3"}, none);
  add("vq3-plain", "uniform", "VQ d4/K4096, nearest codeword", {"vq3"}, plain);
  // Mixed tiers at the target against uniform 2-bit, spine BF16 and INT4.
  for (const bool spine : {false, true}) {
    const std::string suffix = spine ? "+spine4" : "";
    const auto spine_int4 = [spine](Configuration& c) { c.spine_int4 = spine; };
    const std::string spine_text = spine ? ", spine INT4 g128 GPTQ" : ", spine BF16";
    // (uniform vq2 with the spine BF16 is the uniform table's row)
    if (spine)
      add("vq2" + suffix, "mixed", "uniform VQ d4/K256, GPTQ-VQ" + spine_text, {"vq2"}, spine_int4);
    add("mixed-vq" + suffix, "mixed", "allocator over vq1/vq2/vq3, GPTQ-VQ" + spine_text,
        {"vq1", "vq2", "vq3"}, spine_int4);
    add("mixed-int" + suffix, "mixed", "allocator over int1/int2/int3 scalars, GPTQ" + spine_text,
        {"int1", "int2", "int3"}, spine_int4);
  }
  // Encoder ablations on the 1- and 2-bit tiers.
  for (const std::string tier : {"vq1", "vq2"}) {
    add(tier + "-diagonal", "ablation", "diagonal (GPTVQ) error update", {tier},
        [](Configuration& c) { c.settings.update = vq::ErrorUpdate::Diagonal; });
    add(tier + "-euclidean", "ablation", "Euclidean codeword choice", {tier},
        [](Configuration& c) { c.settings.metric = vq::Metric::Euclidean; });
    add(tier + "-diagonal-euclidean", "ablation", "diagonal update and Euclidean choice (GPTVQ)",
        {tier}, [](Configuration& c) {
          c.settings.update = vq::ErrorUpdate::Diagonal;
          c.settings.metric = vq::Metric::Euclidean;
        });
    add(tier + "-refine1", "ablation", "1 codebook refinement round", {tier},
        [](Configuration& c) { c.refine = 1; });
    add(tier + "-refine2", "ablation", "2 codebook refinement rounds", {tier},
        [](Configuration& c) { c.refine = 2; });
    add(tier + "-lsq", "ablation", "least-squares scales, each row's jointly in H's metric", {tier},
        [](Configuration& c) { c.settings.scale_rule = vq::ScaleRule::LeastSquares; });
  }
  // What decides the 2-bit and 1-bit gaps (the note's investigation): output shrinkage undone,
  // and other vector lengths at the same bits (custom tiers).
  for (const std::string tier : {"int1", "vq1", "vq2", "vq3"})
    add(tier + "-unshrink", "investigation", "module scales × 1/output gain", {tier},
        [](Configuration& c) { c.unshrink = true; });
  for (const std::string tier : {"vq1", "vq2", "vq3"}) {
    if (tier == "vq3")
      add("vq3-refine1", "investigation", "1 codebook refinement round", {"vq3"},
          [](Configuration& c) { c.refine = 1; });
    add(tier + "-refine1-unshrink", "investigation", "1 refinement round, scales × 1/output gain",
        {tier}, [](Configuration& c) {
          c.refine = 1;
          c.unshrink = true;
        });
  }
  for (const bool spine : {false, true})
    for (const bool unshrink : {false, true})
      add(std::string("mixed-vq-refine1") + (unshrink ? "-unshrink" : "") +
              (spine ? "+spine4" : ""),
          "investigation",
          std::string("allocator over vq1/vq2/vq3, 1 refinement round") +
              (unshrink ? ", scales × 1/output gain" : "") +
              (spine ? ", spine INT4 g128 GPTQ" : ", spine BF16"),
          {"vq1", "vq2", "vq3"}, [spine, unshrink](Configuration& c) {
            c.refine = 1;
            c.unshrink = unshrink;
            c.spine_int4 = spine;
          });
  add("mixed-int-unshrink", "investigation",
      "allocator over int1/int2/int3 scalars, GPTQ, scales × 1/output gain",
      {"int1", "int2", "int3"}, [](Configuration& c) { c.unshrink = true; });
  for (const std::string tier : {"int2", "int3"})
    add(tier + "-unshrink", "investigation", "module scales × 1/output gain", {tier},
        [](Configuration& c) { c.unshrink = true; });
  // (tier-lsq, the ablation, is the refit alone; with the gain correction after it, as the
  // quantize job does for learned tiers when a rule asks for refit_scales)
  for (const std::string tier : {"vq1", "vq2"})
    for (const int refine : {0, 1})
      for (const bool unshrink : {false, true}) {
        if (refine == 0 && !unshrink) continue;
        add(tier + (refine ? "-refine1" : "") + "-lsq" + (unshrink ? "-unshrink" : ""),
            "investigation",
            std::string(refine ? "1 refinement round, " : "") +
                "least-squares scales in H's metric" +
                (unshrink ? ", then scales × 1/output gain" : ""),
            {tier}, [refine, unshrink](Configuration& c) {
              c.refine = refine;
              c.unshrink = unshrink;
              c.settings.scale_rule = vq::ScaleRule::LeastSquares;
            });
      }
  add("vq2-refine2-unshrink", "investigation", "2 refinement rounds, scales × 1/output gain",
      {"vq2"}, [](Configuration& c) {
        c.refine = 2;
        c.unshrink = true;
      });
  add("vq1-d4", "investigation", "1-bit VQ d4/K16, GPTQ-VQ", {"vq1-d4"}, none);
  add("vq2-d2", "investigation", "2-bit VQ d2/K16, GPTQ-VQ", {"vq2-d2"}, none);
  add("vq2-d2-unshrink", "investigation", "2-bit VQ d2/K16, scales × 1/output gain", {"vq2-d2"},
      [](Configuration& c) { c.unshrink = true; });
  return list;
}

// The GPTQ-INT baseline's bits per weight: codes, a BF16 scale and a `bits`-wide zero point
// per 128 columns (compressed-tensors pack-quantized asymmetric).
double gptq_bits_per_weight(int bits) { return bits + (16.0 + bits) / 128.0; }

class Study {
 public:
  Study(const Options& options)
      : options_(options),
        checkpoint_(Checkpoint::open(options.model)),
        statistics_(CalibrationStore::open(options.statistics)),
        hessians_(statistics_),
        experts_(routed_experts(checkpoint_, statistics_)),
        tokens_(run::read_tokens_argument(options.tokens, "", options.rows)) {
    for (const auto& tier : preset_vq_tiers()) tiers_.emplace(tier.name, tier);
    tiers_.emplace("vq1-d4", vq::Tier{"vq1-d4", 4, 16, VqCodebookKind::Learned});
    tiers_.emplace("vq2-d2", vq::Tier{"vq2-d2", 2, 16, VqCodebookKind::Learned});
  }

  Outcome run(const Configuration& configuration) {
    Outcome outcome;
    outcome.configuration = configuration;
    const auto start = Clock::now();
    DecodedWeights decoded;
    std::uint64_t weights = 0;
    double bits = 0.0;
    if (configuration.gptq_bits > 0) {
      for (const auto& module : experts_) {
        decoded.set(module, gptq_int(module, configuration.gptq_bits));
        weights += module.rows * module.cols;
      }
      bits = static_cast<double>(weights) * gptq_bits_per_weight(configuration.gptq_bits);
    } else {
      std::map<std::string, std::string> tier_of;
      if (configuration.tiers.size() == 1) {
        for (const auto& module : experts_) tier_of[module.name] = configuration.tiers[0];
      } else {
        tier_of = allocate(configuration.tiers, outcome.allocation);
      }
      std::map<std::string, vq::Codebook> books;
      for (const auto& name : configuration.tiers)
        books.emplace(name, refined(name, configuration.settings, configuration.refine));
      for (const auto& module : experts_) {
        const auto& tier = tiers_.at(tier_of.at(module.name));
        vq::VqQuantized quantized;
        auto values = encode(module, books.at(tier.name), configuration.settings, quantized);
        if (configuration.unshrink) values = unshrunk(module, books.at(tier.name), quantized);
        decoded.set(module, std::move(values));
        weights += module.rows * module.cols;
        bits += static_cast<double>(module.rows * module.cols) * tier.bits_per_weight();
      }
    }
    outcome.bpw = bits / static_cast<double>(weights);
    for (const auto& module : experts_) {
      const auto* prepared = hessians_.prepared(module.name, 1);
      const auto values = decoded.linear(module.name)->values;
      const auto objective = gptq::detail::objective_of_decoded(module.weight, values, module.rows,
                                                                module.cols, *prepared);
      outcome.objective += objective.error;
      outcome.reference += objective.reference;
      outcome.energy += gptq::detail::quadratic_form(values, module.rows, module.cols, *prepared);
    }
    if (configuration.spine_int4) decoded.merge(spine_int4());
    outcome.encode_s = seconds_since(start);

    const auto evaluation_start = Clock::now();
    run::EvaluationOptions evaluation;
    evaluation.decode_steps = 0;
    evaluation.test_overrides = &decoded;
    outcome.divergence = run::evaluate(checkpoint_, checkpoint_, tokens_, evaluation).divergence;
    outcome.eval_s = seconds_since(evaluation_start);
    return outcome;
  }

 private:
  std::vector<float> gptq_int(const StudyModule& module, int bits) {
    const intq::IntScheme scheme{{bits, false}, 128, intq::Observer::MinMax};
    intq::IntQuantized out;
    const auto* prepared = hessians_.prepared(module.name, 1);
    if (!prepared) throw_bad_input("calibration.missing_module", "no statistics", {}, module.name);
    const auto result = gptq::quantize(module.weight, module.rows, module.cols, DType::BF16, scheme,
                                       *prepared, gptq::Backend::Cpu, out, false);
    if (!result.fallback.empty())
      fmt::print(stderr, "{}: GPTQ fell back to round-to-nearest: {}\n", module.name,
                 result.fallback);
    std::vector<float> values(module.rows * module.cols);
    intq::dequantize(out, values);
    return values;
  }

  std::vector<float> encode(const StudyModule& module, const vq::Codebook& codebook,
                            const vq::EncodeSettings& settings, vq::VqQuantized& quantized,
                            std::span<float> swept = {}) {
    const auto* prepared = hessians_.prepared(module.name, codebook.tier.d);
    vq::encode(module.weight, module.rows, module.cols, DType::BF16, codebook,
               settings.compensate ? prepared : nullptr, settings, vq::Backend::Cpu, quantized,
               swept);
    std::vector<float> values(module.rows * module.cols);
    vq::decode(quantized, codebook, values);
    return values;
  }

  // vq::correct_output_gain: every group scale × 1 / the module's output gain.
  std::vector<float> unshrunk(const StudyModule& module, const vq::Codebook& codebook,
                              vq::VqQuantized& quantized) {
    vq::correct_output_gain(module.weight, codebook, *hessians_.prepared(module.name, 1),
                            quantized);
    std::vector<float> values(module.rows * module.cols);
    vq::decode(quantized, codebook, values);
    return values;
  }

  const vq::Codebook& codebook(const std::string& tier) {
    auto found = codebooks_.find(tier);
    if (found == codebooks_.end()) {
      const auto start = Clock::now();
      found = codebooks_
                  .emplace(tier, shared_codebook(tiers_.at(tier), experts_, hessians_,
                                                 options_.fit_vectors, vq::Backend::Cpu))
                  .first;
      fmt::print(stderr, "codebook {}: fitted in {:.1f} s\n", tier, seconds_since(start));
    }
    return found->second;
  }

  // The tier's codebook after `rounds` of refinement: encode every expert, re-fit each
  // codeword to the compensated targets its vectors had, repeat.
  // The rounds encode with the RMS scales even when the configuration refits them: the codes
  // were chosen for the targets normalised by the sweep's scales, and re-fitting codewords to
  // targets normalised by refitted (larger) scales shrinks them again (vq1 KLD 0.027 against
  // 0.015 on the bundled model; the note's least-squares paragraph).
  vq::Codebook refined(const std::string& tier, vq::EncodeSettings settings, int rounds) {
    if (rounds == 0) return codebook(tier);
    settings.scale_rule = vq::ScaleRule::Rms;
    const auto key = fmt::format(
        "{}/{}/{}/{}/{}/{}", tier, rounds, settings.compensate, static_cast<int>(settings.metric),
        static_cast<int>(settings.update), static_cast<int>(settings.scale_rule));
    if (const auto found = refined_.find(key); found != refined_.end()) return found->second;
    vq::Codebook current = rounds > 1 ? refined(tier, settings, rounds - 1) : codebook(tier);
    vq::CodebookRefinement refinement(current);
    for (const auto& module : experts_) {
      vq::VqQuantized quantized;
      std::vector<float> swept(module.rows * module.cols);
      encode(module, current, settings, quantized, swept);
      refinement.add(swept, quantized, hessians_.column_weights(module.name));
    }
    current = refinement.refined();
    refined_.emplace(key, current);
    return current;
  }

  // Tiers by the allocator at the target bpw: one item per expert's gate+up pair (they share a
  // tier) and one per down_proj, errors from vq::allocation_error × routing frequency.
  std::map<std::string, std::string> allocate(const std::vector<std::string>& menu,
                                              std::string& histogram) {
    std::map<std::string, std::vector<const StudyModule*>> groups;  // item → its modules
    for (const auto& module : experts_) {
      const std::string prefix =
          fmt::format("model.layers.{}.mlp.experts.{}", module.layer, module.expert);
      groups[module.projection == Projection::Down ? prefix + ".down" : prefix + ".gate_up"]
          .push_back(&module);
    }
    std::vector<alloc::Item> items;
    double weights = 0.0;
    for (const auto& [name, members] : groups) {
      alloc::Item item;
      item.name = name;
      for (const auto& tier_name : menu) {
        const auto& tier = tiers_.at(tier_name);
        alloc::Choice choice;
        for (const auto* module : members) {
          vq::AllocationErrorSettings settings;
          settings.frequency = module->frequency;
          choice.error +=
              vq::allocation_error(module->weight, module->rows, module->cols, DType::BF16,
                                   codebook(tier_name), hessians_.moments(module->name), settings);
          choice.bits += static_cast<double>(module->rows * module->cols) * tier.bits_per_weight();
        }
        item.choices.push_back(choice);
      }
      for (const auto* module : members) item.weights += module->rows * module->cols;
      weights += static_cast<double>(item.weights);
      items.push_back(std::move(item));
    }
    const auto allocation = alloc::allocate(items, options_.target_bpw * weights);
    std::map<std::string, std::string> tier_of;
    std::map<std::string, int> counts;
    std::size_t index = 0;
    for (const auto& [name, members] : groups) {
      const auto& tier = menu[allocation.tiers[index++]];
      for (const auto* module : members) {
        tier_of[module->name] = tier;
        ++counts[tier];
      }
    }
    for (const auto& tier : menu)
      histogram += fmt::format("{}{}: {}", histogram.empty() ? "" : ", ", tier, counts[tier]);
    return tier_of;
  }

  const DecodedWeights& spine_int4() {
    if (!spine_) {
      spine_ = std::make_unique<DecodedWeights>();
      for (const auto& module : spine_linears(checkpoint_))
        spine_->set(module, gptq_int(module, 4));
    }
    return *spine_;
  }

  const Options& options_;
  Checkpoint checkpoint_;
  CalibrationStore statistics_;
  HessianBank hessians_;
  std::vector<StudyModule> experts_;
  run::TokenBatch tokens_;
  std::map<std::string, vq::Tier> tiers_;
  std::map<std::string, vq::Codebook> codebooks_;
  std::map<std::string, vq::Codebook> refined_;  // by tier, rounds and encoder settings
  std::unique_ptr<DecodedWeights> spine_;
};

double relative(double value, const Outcome& o) {
  return o.reference > 0 ? value / o.reference : 0.0;
}
// tr(Ŵ·H·Wᵀ) / tr(W·H·Wᵀ): below 1 when the decoded experts' outputs shrink towards 0.
double gain(const Outcome& o) { return relative((o.reference + o.energy - o.objective) / 2.0, o); }

void print_table(const std::vector<Outcome>& outcomes) {
  fmt::print(
      "| configuration | what | bpw | mean KLD | same top-1 | objective (rel.) | output gain | "
      "output energy | encode s | eval s |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& o : outcomes) {
    const auto& d = o.divergence;
    fmt::print(
        "| {} | {}{} | {:.3f} | {:.5f} ± {:.5f} | {:.4f} ± {:.4f} | {:.4f} | {:.3f} | {:.3f} | "
        "{:.1f} | {:.1f} |\n",
        o.configuration.name, o.configuration.description,
        o.allocation.empty() ? "" : " (" + o.allocation + ")", o.bpw, d.kld.mean, d.kld.error,
        d.top1_agreement.mean, d.top1_agreement.error, relative(o.objective, o), gain(o),
        relative(o.energy, o), o.encode_s, o.eval_s);
  }
}

nlohmann::ordered_json outcome_json(const Outcome& o) {
  const auto& d = o.divergence;
  return {{"name", o.configuration.name},
          {"group", o.configuration.group},
          {"description", o.configuration.description},
          {"allocation", o.allocation},
          {"bpw", o.bpw},
          {"kld", {{"mean", d.kld.mean}, {"error", d.kld.error}}},
          {"top1_agreement", {{"mean", d.top1_agreement.mean}, {"error", d.top1_agreement.error}}},
          {"ppl_ratio", d.ppl_ratio},
          {"objective", o.objective},
          {"objective_reference", o.reference},
          {"output_energy", o.energy},
          {"output_gain", gain(o)},
          {"encode_s", o.encode_s},
          {"eval_s", o.eval_s}};
}

int study_main(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw_bad_input("bench.arguments", arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--rows") {
      options.rows = std::stoull(value());
    } else if (arg == "--only") {
      std::stringstream list(value());
      for (std::string name; std::getline(list, name, ',');) options.only.insert(name);
    } else if (arg == "--json") {
      options.json = value();
    } else if (arg == "--fit-vectors") {
      options.fit_vectors = std::stoull(value());
    } else if (arg == "--target-bpw") {
      options.target_bpw = std::stod(value());
    } else if (arg == "--list") {
      for (const auto& c : configurations())
        fmt::print("{:24} {:9} {}\n", c.name, c.group, c.description);
      return 0;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 3) {
    fmt::print(stderr,
               "usage: qs_bench_vq_quality MODEL STATS TOKENS[:TENSOR] [--rows N] [--only A,B] "
               "[--json FILE] [--fit-vectors N] [--target-bpw X] | --list\n");
    return 2;
  }
  options.model = positional[0];
  options.statistics = positional[1];
  options.tokens = positional[2];
  for (const auto& name : options.only) {
    bool known = false;
    for (const auto& c : configurations()) known = known || c.name == name;
    if (!known) throw_bad_input("bench.arguments", "no configuration " + name + " (see --list)");
  }

  Study study(options);
  std::vector<Outcome> outcomes;
  nlohmann::ordered_json json = nlohmann::ordered_json::array();
  for (const auto& configuration : configurations()) {
    if (!options.only.empty() && !options.only.count(configuration.name)) continue;
    outcomes.push_back(study.run(configuration));
    const auto& o = outcomes.back();
    fmt::print(stderr, "{}: KLD {:.5f} ± {:.5f}, top-1 {:.4f}, {:.3f} bpw ({:.1f} + {:.1f} s)\n",
               o.configuration.name, o.divergence.kld.mean, o.divergence.kld.error,
               o.divergence.top1_agreement.mean, o.bpw, o.encode_s, o.eval_s);
    json.push_back(outcome_json(o));
    if (!options.json.empty()) std::ofstream(options.json) << json.dump(2) << "\n";
  }
  print_table(outcomes);
  return 0;
}

}  // namespace
}  // namespace qs::bench

int main(int argc, char** argv) {
  try {
    return qs::bench::study_main(argc, argv);
  } catch (const std::exception& error) {
    fmt::print(stderr, "qs_bench_vq_quality: {}\n", error.what());
    return 2;
  }
}
