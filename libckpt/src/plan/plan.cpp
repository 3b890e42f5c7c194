#include "qs/ckpt/plan/plan.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"

namespace qs {

double TensorQuality::snr_db() const {
  if (error_energy == 0.0) return std::numeric_limits<double>::infinity();
  if (signal_energy == 0.0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal_energy / error_energy);
}

double TensorQuality::relative_mse() const {
  return signal_energy == 0.0 ? 0.0 : error_energy / signal_energy;
}

std::uint64_t PlanItem::source_bytes() const {
  std::uint64_t total = 0;
  for (const auto& source : sources) total += source.info->byte_size();
  return total;
}

std::uint64_t PlanItem::output_bytes() const {
  std::uint64_t total = 0;
  for (const auto& output : outputs) total += output.byte_size();
  return total;
}

std::uint64_t PlanItem::source_elements() const {
  std::uint64_t total = 0;
  for (const auto& source : sources) total += source.info->element_count();
  return total;
}

std::vector<TensorSpec> Plan::output_specs() const {
  std::vector<TensorSpec> specs;
  for (const auto& item : items)
    specs.insert(specs.end(), item.outputs.begin(), item.outputs.end());
  return specs;
}

std::uint64_t Plan::source_bytes() const {
  std::uint64_t total = 0;
  for (const auto& item : items) total += item.source_bytes();
  return total;
}

std::uint64_t Plan::output_bytes() const {
  std::uint64_t total = 0;
  for (const auto& item : items) total += item.output_bytes();
  return total;
}

double bits_per_weight(std::uint64_t output_bytes, std::uint64_t source_elements) {
  if (source_elements == 0) return 0.0;
  return 8.0 * static_cast<double>(output_bytes) / static_cast<double>(source_elements);
}

namespace {

class CopyTransform final : public Transform {
 public:
  std::string describe() const override { return "copy"; }
  bool is_byte_copy() const override { return true; }
  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    if (sources.size() != 1 || outputs.size() != 1 || sources[0].bytes.size() != outputs[0].size())
      throw Error(ErrorClass::Internal, "plan.copy_shape", "copy needs one source and one output");
    std::memcpy(outputs[0].data(), sources[0].bytes.data(), outputs[0].size());
    return {};
  }
};

bool castable(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32;
}

class CastTransform final : public Transform {
 public:
  explicit CastTransform(DType target) : target_(target) {}
  std::string describe() const override { return fmt::format("cast({})", dtype_name(target_)); }
  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    const auto& source = sources[0];
    if (!castable(source.info->dtype))
      throw_bad_input(
          "plan.uncastable_dtype",
          fmt::format("cannot cast {} to {}", dtype_name(source.info->dtype), dtype_name(target_)),
          {}, source.info->name);
    std::vector<float> values(source.info->element_count());
    decode_to_f32(source.info->dtype, source.bytes, values);
    encode_from_f32(target_, values, outputs[0]);
    return {};
  }

 private:
  DType target_;
};

}  // namespace

std::shared_ptr<const Transform> make_copy_transform() { return std::make_shared<CopyTransform>(); }

PlanItem copy_item(const SourceRef& source, std::string output_name, std::string decided_by) {
  PlanItem item;
  item.sources.push_back(source);
  item.transform = make_copy_transform();
  item.outputs.push_back({std::move(output_name), source.info->dtype, source.info->shape});
  item.scheme = "copy";
  item.decided_by = std::move(decided_by);
  return item;
}

std::shared_ptr<const Transform> make_cast_transform(DType target) {
  if (!castable(target))
    throw_bad_input("plan.uncastable_dtype",
                    fmt::format("cannot cast to {}: only BF16, F16 and F32", dtype_name(target)));
  return std::make_shared<CastTransform>(target);
}

}  // namespace qs
