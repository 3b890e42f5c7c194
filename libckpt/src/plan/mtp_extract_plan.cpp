#include "qs/ckpt/plan/mtp_extract_plan.h"

#include <fmt/format.h>

#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

class MtpExtractPlanner {
 public:
  MtpExtractPlanner(const Checkpoint& source, const DequantizeTransformFactory& make_dequantizer)
      : source_(source),
        make_dequantizer_(make_dequantizer),
        modules_(modules_of(source)),
        declared_bits_(source.config()),
        vq_(VqDeclaration::of(source)) {
    for (const auto& [module, declared] : vq_.modules()) vq_codebooks_.insert(declared.codebook);
    result_.plan.inputs.push_back(&source);
  }

  MtpExtractPlan plan(const MtpExtractOptions& options) {
    const auto layout = model_layout_from_config(source_.config());
    const std::string config_file = (source_.directory() / "config.json").string();
    if (!layout || layout->num_nextn_predict_layers == 0)
      throw Error(ErrorClass::BadInput, "mtp.no_mtp_layer",
                  "config.json declares no MTP layer (num_nextn_predict_layers is 0 or absent)",
                  config_file);
    result_.first_layer = layout->num_hidden_layers;
    result_.layer_count = layout->num_nextn_predict_layers;
    std::set<std::string> done;
    for (const auto& location : source_.tensors()) {
      const auto parsed = parse_tensor_name(location.info->name);
      if (!in_mtp_layer(parsed, *layout)) continue;
      // A VQ codebook is read with the modules that index it; they are written dequantized.
      if (vq_codebooks_.contains(location.info->name)) continue;
      if (!done.insert(parsed.module_path).second) continue;
      add_module(parsed.module_path, parsed.module_path);
    }
    if (done.empty())
      throw Error(ErrorClass::BadInput, "mtp.no_mtp_layer",
                  fmt::format("config.json declares {} MTP layer(s) from index {}, but no tensor "
                              "of model.layers.{} is stored",
                              result_.layer_count, result_.first_layer, result_.first_layer),
                  source_.directory().string());
    if (options.with_head) {
      const std::string draft = fmt::format("model.layers.{}", result_.first_layer);
      add_module("lm_head", draft + ".shared_head.head");
      add_module("model.embed_tokens", draft + ".embed_tokens");
    }
    result_.config = source_.config();
    result_.config.erase("quantization_config");
    return std::move(result_);
  }

 private:
  // Every tensor of `module`, written under `output_module`; a quantized Linear becomes one
  // float weight.
  void add_module(const std::string& module, const std::string& output_module) {
    const auto found = modules_.find(module);
    if (found == modules_.end())
      throw Error(ErrorClass::BadInput, "mtp.missing_tensor", "the source has no such module",
                  source_.directory().string(), module);
    const ModuleParameters parameters =
        vq_.with_codebook(source_, module, found->second, "mtp.unsupported_layout");
    const WeightFormat& format = detect_weight_format(parameters);
    std::set<std::string> consumed;
    if (format.decodable()) {
      add_dequantized(module, output_module, parameters, format);
      for (const auto& [name, location] : parameters)
        if (is_quantization_companion(parse_tensor_name(location.info->name).parameter) ||
            name == "weight" || name == kVqCodebookParameter)
          consumed.insert(name);
    } else if (format.codes != CodeFamily::Float) {
      throw Error(ErrorClass::BadInput, "mtp.unsupported_layout",
                  fmt::format("stored as {}, which mtp extract cannot dequantize", format.name),
                  source_.directory().string(), module);
    }
    for (const auto& [name, location] : parameters) {
      if (consumed.count(name)) continue;
      result_.plan.items.push_back(
          copy_item({0, location.shard, location.info}, output_module + "." + name, "MTP layer"));
      ++result_.copied_tensors;
    }
  }

  void add_dequantized(const std::string& module, const std::string& output_module,
                       const ModuleParameters& parameters, const WeightFormat& format) {
    const auto weight =
        format.check(module, parameters, declared_bits_(module), "mtp.unsupported_layout");
    const DequantizeRequest& request = weight.request;
    const Shape shape{request.rows, request.cols};
    PlanItem item;
    for (const auto& location : weight.sources)
      item.sources.push_back({0, location.shard, location.info});
    item.transform = make_dequantizer_(request);
    item.outputs.push_back({output_module + ".weight", request.dtype, shape});
    item.scheme = fmt::format("dequantize {}", format.name);
    item.decided_by = "MTP layer";
    result_.plan.items.push_back(std::move(item));
    result_.dequantized_modules.push_back(output_module);
  }

  const Checkpoint& source_;
  const DequantizeTransformFactory& make_dequantizer_;
  std::map<std::string, ModuleParameters> modules_;
  DeclaredPackBits declared_bits_;
  VqDeclaration vq_;
  std::set<std::string> vq_codebooks_;
  MtpExtractPlan result_;
};

}  // namespace

MtpExtractPlan plan_mtp_extract(const Checkpoint& source, const MtpExtractOptions& options,
                                const DequantizeTransformFactory& make_dequantizer) {
  return MtpExtractPlanner(source, make_dequantizer).plan(options);
}

}  // namespace qs
