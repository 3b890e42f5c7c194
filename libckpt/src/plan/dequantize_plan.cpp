#include "qs/ckpt/plan/dequantize_plan.h"

#include <fmt/format.h>

#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {

DequantizePlan plan_dequantize(const Checkpoint& source, DType dtype,
                               const DequantizeTransformFactory& make_dequantizer) {
  if (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32)
    throw_bad_input("cli.bad_dtype",
                    fmt::format("dequantize writes BF16, F16 or F32, not {}", dtype_name(dtype)));
  const auto modules = modules_of(source);
  const DeclaredPackBits declared_bits(source.config());
  const auto vq = VqDeclaration::of(source);
  std::set<std::string> dropped;  // tensors a dequantized module replaces, and VQ codebooks
  for (const auto& [module, declared] : vq.modules()) dropped.insert(declared.codebook);

  DequantizePlan result;
  result.plan.inputs = {&source};
  std::set<std::string> done;
  for (const auto& location : source.tensors()) {
    const std::string& name = location.info->name;
    const auto parsed = parse_tensor_name(name);
    const auto module = modules.find(parsed.module_path);
    if (module != modules.end() && !done.contains(parsed.module_path)) {
      done.insert(parsed.module_path);
      const auto parameters =
          vq.with_codebook(source, parsed.module_path, module->second, "dequantize.bad_input");
      const WeightFormat& format = detect_weight_format(parameters);
      if (format.decodable()) {
        auto weight = format.check(parsed.module_path, parameters,
                                   declared_bits(parsed.module_path), "dequantize.bad_input");
        weight.request.dtype = dtype;
        PlanItem item;
        for (const auto& stored : weight.sources) {
          item.sources.push_back({0, stored.shard, stored.info});
          dropped.insert(stored.info->name);
        }
        for (const auto& parameter : format.parameter_names(true))
          if (const auto found = parameters.find(parameter); found != parameters.end())
            dropped.insert(found->second.info->name);
        item.transform = make_dequantizer(weight.request);
        item.outputs.push_back({parsed.module_path + ".weight", dtype,
                                Shape{weight.request.rows, weight.request.cols}});
        item.scheme = fmt::format("dequantize {}", format.name);
        item.decided_by = "dequantize";
        result.plan.items.push_back(std::move(item));
        result.dequantized_modules.push_back(parsed.module_path);
      } else if (format.codes != CodeFamily::Float) {
        throw_bad_input("dequantize.unsupported_layout",
                        fmt::format("stored as {}, which quantsmith does not decode", format.name),
                        location.shard->path().string(), parsed.module_path);
      }
    }
    if (dropped.contains(name)) continue;
    result.plan.items.push_back(copy_item({0, location.shard, location.info}, name, "dequantize"));
    ++result.copied_tensors;
  }
  return result;
}

}  // namespace qs
