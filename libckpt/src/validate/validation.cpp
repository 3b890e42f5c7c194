#include "qs/ckpt/validate/validation.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/formats/fp8_block_sources.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/model/checkpoint_layout.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

using Check = void (*)(const Checkpoint&, ValidationReport&);

// huggingface_hub writes the sum of tensor bytes; some exporters write the sum of file sizes.
// Both are accepted; anything else misleads download tools and loaders that preallocate.
void check_index_total_size(const Checkpoint& checkpoint, ValidationReport& report) {
  if (!checkpoint.has_index()) return;
  const auto& index = checkpoint.index();
  std::string index_file = (checkpoint.directory() / kIndexFileName).string();
  if (!index.contains("metadata") || !index["metadata"].contains("total_size")) {
    report.add(Severity::Warning, "index", "index.no_total_size", "has no metadata.total_size",
               index_file);
    return;
  }
  const auto& value = index["metadata"]["total_size"];
  if (!value.is_number_unsigned()) {
    report.add(Severity::Problem, "index", "index.total_size_invalid",
               "metadata.total_size is not a non-negative integer", index_file);
    return;
  }
  auto total = value.get<std::uint64_t>();
  if (total == checkpoint.tensor_bytes()) return;
  if (total == checkpoint.file_bytes()) {
    report.add(Severity::Warning, "index", "index.total_size_is_file_bytes",
               "metadata.total_size counts whole files, not tensor bytes", index_file);
    return;
  }
  report.add(Severity::Problem, "index", "index.total_size_mismatch",
             fmt::format("metadata.total_size is {} but the tensors hold {} bytes", total,
                         checkpoint.tensor_bytes()),
             index_file);
}

void check_config_present(const Checkpoint& checkpoint, ValidationReport& report) {
  std::string config_file = (checkpoint.directory() / "config.json").string();
  const auto& config = checkpoint.config();
  if (config.is_null()) {
    // A CI gate must not pass what it could not check: without config.json no tensor name,
    // shape or quantization scheme can be held against the architecture.
    report.add(Severity::Problem, "config", "config.missing",
               "no config.json: the layout (tensor names, shapes, quantization) cannot be checked",
               config_file);
    return;
  }
  if (!config.is_object() || !config.contains("model_type"))
    report.add(Severity::Problem, "config", "config.no_model_type", "config.json has no model_type",
               config_file);
}

bool is_float(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32;
}

// A weight config.json implies, stored quantized: the logical [out, in] shape its tensors give
// (the packing's, or weight_shape's) must be the one config.json implies, or engines allocate
// one shape and find another (an expert stored [64, K] instead of [128, K]).
void check_quantized_shape(const TensorSpec& spec,
                           const std::map<std::string, ModuleParameters>& modules,
                           ValidationReport& report) {
  const auto module_path = parse_tensor_name(spec.name).module_path;
  const auto module = modules.find(module_path);
  if (module == modules.end()) return;
  const auto& parameters = module->second;
  const auto layout = classify_module(parameters);
  const auto logical = logical_weight_shape(parameters, layout);
  if (logical && *logical == spec.shape) return;
  const auto& any = parameters.begin()->second;
  const auto codes = parameters.count("weight_packed") ? parameters.at("weight_packed")
                     : parameters.count("weight")      ? parameters.at("weight")
                                                       : any;
  report.add(Severity::Problem, "layout", "layout.shape_mismatch",
             logical
                 ? fmt::format("stored {} weight of logical shape {}, but config.json implies {}",
                               weight_layout_name(layout), shape_to_string(*logical),
                               shape_to_string(spec.shape))
                 : fmt::format("stored quantized ({}), but its tensors give no logical "
                               "weight shape; config.json implies {}",
                               weight_layout_name(layout), shape_to_string(spec.shape)),
             codes.shard->path().string(), codes.info->name);
}

// Every tensor config.json implies, with its shape and dtype, against what the files hold.
void check_layout_against_config(const Checkpoint& checkpoint, ValidationReport& report) {
  const auto& config = checkpoint.config();
  if (!find_model_family(config)) {
    std::string known;
    for (const auto& family : model_families())
      known += fmt::format("{}{}", known.empty() ? "" : ", ", family.name);
    report.add(
        Severity::Warning, "layout", "layout.not_checked",
        fmt::format("tensor names and shapes are checked for the model families {} only", known));
    return;
  }
  std::string config_file = (checkpoint.directory() / "config.json").string();
  std::vector<LayoutTensor> expected;
  try {
    expected = checkpoint_layout(dimensions_from_config(config, config_file));
  } catch (const Error& error) {
    report.add(Severity::Problem, "layout", error.kind(), error.detail(), config_file);
    return;
  }
  // A standalone MTP draft (mtp extract, seed 003) holds only the MTP layers, which vLLM's
  // DeepSeekMTP loader reads with the target's config: only those layers are expected, plus
  // the draft's own head and embedding the loader also accepts.
  const auto model_layout = model_layout_from_config(config);
  auto is_mtp_tensor = [&](const std::string& name) {
    return model_layout && in_mtp_layer(parse_tensor_name(name), *model_layout);
  };
  const bool draft =
      !checkpoint.tensors().empty() &&
      std::all_of(checkpoint.tensors().begin(), checkpoint.tensors().end(),
                  [&](const auto& location) { return is_mtp_tensor(location.info->name); });
  if (draft) {
    std::erase_if(expected, [&](const auto& tensor) { return !is_mtp_tensor(tensor.spec.name); });
    report.checks_run.push_back("layout (MTP draft)");
  } else {
    report.checks_run.push_back("layout");
  }

  // Modules whose weight is stored quantized: their companions stand in for `.weight`.
  std::set<std::string> quantized_modules;
  for (const auto& location : checkpoint.tensors()) {
    auto parsed = parse_tensor_name(location.info->name);
    if (is_quantization_companion(parsed.parameter)) quantized_modules.insert(parsed.module_path);
  }
  const auto modules = modules_of(checkpoint);

  std::set<std::string> expected_names;
  for (const auto& tensor : expected) {
    const auto& spec = tensor.spec;
    expected_names.insert(spec.name);
    auto location = checkpoint.find(spec.name);
    bool quantized = quantized_modules.count(parse_tensor_name(spec.name).module_path) != 0;
    if (quantized && (!location || !is_float(location->info->dtype))) {
      check_quantized_shape(spec, modules, report);
      continue;
    }
    if (!location) {
      report.add(Severity::Problem, "layout", "layout.missing_tensor",
                 "config.json implies this tensor but no shard holds it", {}, spec.name);
      continue;
    }
    const auto& info = *location->info;
    std::string file = location->shard->path().string();
    if (info.shape != spec.shape)
      report.add(Severity::Problem, "layout", "layout.shape_mismatch",
                 fmt::format("shape {} but config.json implies {}", shape_to_string(info.shape),
                             shape_to_string(spec.shape)),
                 file, spec.name);
    if (info.dtype != spec.dtype) {
      // Keeping a tensor in another float type is a choice recipes make (e.g. an F32
      // weights_proj); anything else is not the model's tensor.
      bool float_choice = is_float(info.dtype) && is_float(spec.dtype);
      report.add(float_choice ? Severity::Warning : Severity::Problem, "layout",
                 float_choice ? "layout.dtype_differs" : "layout.dtype_mismatch",
                 fmt::format("stored as {}, the model's dtype is {}", dtype_name(info.dtype),
                             dtype_name(spec.dtype)),
                 file, spec.name);
    }
  }

  // VQ codebooks are tensors of the checkpoint that the config's quantization_config.vq names
  // (docs/formats/vq.md); the vq check judges them. An unreadable declaration names none.
  std::set<std::string> vq_codebooks;
  try {
    const auto declaration = VqDeclaration::of(checkpoint);
    for (const auto& [module, declared] : declaration.modules())
      vq_codebooks.insert(declared.codebook);
  } catch (const Error&) {  // the vq check reports it
  }
  for (const auto& location : checkpoint.tensors()) {
    const auto& name = location.info->name;
    if (expected_names.count(name) || vq_codebooks.count(name)) continue;
    auto parsed = parse_tensor_name(name);
    bool companion_of_expected = is_quantization_companion(parsed.parameter) &&
                                 expected_names.count(parsed.module_path + ".weight");
    bool draft_head = draft && (name.ends_with(".shared_head.head.weight") ||
                                name.ends_with(".embed_tokens.weight"));
    if (!companion_of_expected && !draft_head)
      report.add(Severity::Problem, "layout", "layout.unexpected_tensor",
                 "not part of the architecture config.json describes",
                 location.shard->path().string(), name);
  }
}

constexpr std::array<Check, 3> kStructuralChecks{
    check_index_total_size,
    check_config_present,
    check_layout_against_config,
};

}  // namespace

bool ValidationReport::has_problems() const {
  for (const auto& finding : findings)
    if (finding.severity == Severity::Problem) return true;
  return false;
}

void ValidationReport::add(Severity severity, std::string check, std::string kind,
                           std::string message, std::string file, std::string tensor) {
  findings.push_back({severity, std::move(check), std::move(kind), std::move(file),
                      std::move(tensor), std::move(message)});
}

void require_layout_matches_config(const Checkpoint& checkpoint) {
  ValidationReport report;
  check_config_present(checkpoint, report);
  // FP8 block-scaled modules are read through their scales: a missing or malformed one is its
  // own error (fp8.*), before the layout check would call the bare F8_E4M3 weight a mismatch.
  if (!report.has_problems()) fp8_block_modules(checkpoint);
  if (!report.has_problems()) check_layout_against_config(checkpoint, report);
  std::size_t problems = 0;
  const Finding* first = nullptr;
  for (const auto& finding : report.findings) {
    if (finding.severity != Severity::Problem) continue;
    ++problems;
    if (!first) first = &finding;
  }
  if (!first) return;
  throw Error(
      ErrorClass::BadInput, "layout.config_mismatch",
      fmt::format(
          "{} ({}){}; `quantsmith validate` lists every problem", first->message, first->kind,
          problems > 1 ? fmt::format(", and {} more problem(s)", problems - 1) : std::string()),
      first->file.empty() ? checkpoint.directory().string() : first->file, first->tensor);
}

ValidationReport validate_checkpoint(const Checkpoint& checkpoint, const ValidationOptions& options,
                                     const std::function<void(std::uint64_t)>& on_bytes_scanned) {
  ValidationReport report;
  report.checks_run = {"headers", "index"};
  report.checks_run.push_back("config");
  for (auto check : kStructuralChecks) check(checkpoint, report);

  if (options.checksum) {
    report.checks_run.push_back("checksum");
    // One shard per thread: a file's hash is sequential, but shards are independent.
    const auto& shards = checkpoint.shards();
    std::vector<ShardScan> scans(shards.size());
    std::vector<std::atomic<std::uint64_t>> progress(shards.size());
    std::mutex progress_mutex;
    tbb::parallel_for(std::size_t{0}, shards.size(), [&](std::size_t index) {
      scans[index] = scan_shard(*shards[index], {}, [&](std::uint64_t bytes) {
        progress[index] = bytes;
        if (!on_bytes_scanned) return;
        std::uint64_t total = 0;
        for (const auto& done : progress) total += done;
        std::lock_guard lock(progress_mutex);
        on_bytes_scanned(total);
      });
    });
    for (std::size_t index = 0; index < shards.size(); ++index) {
      for (const auto& count : scans[index].non_finite)
        report.add(Severity::Problem, "checksum", "data.non_finite",
                   fmt::format("{} NaN and {} Inf values", count.nan, count.inf),
                   shards[index]->path().string(), count.tensor);
      report.scans.emplace_back(shards[index]->path().filename().string(), std::move(scans[index]));
    }
  }
  return report;
}

}  // namespace qs
