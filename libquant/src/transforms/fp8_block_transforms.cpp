#include "fp8_block_transforms.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/quant/dequantize_transform.h"
#include "qs/quant/fp8_block_quantizer.h"
#include "weight_guard.h"

namespace qs {
namespace {

class Fp8BlockTransform final : public Transform {
 public:
  Fp8BlockTransform(NanPolicy nan_policy, fp4::Backend backend)
      : nan_policy_(nan_policy), backend_(backend) {}

  std::string describe() const override { return "fp8-block(128x128, e4m3)"; }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    constexpr std::size_t kOutputsPerMember = 2;
    if (outputs.size() != sources.size() * kOutputsPerMember)
      throw Error(ErrorClass::Internal, "fp8.outputs", "wrong number of output tensors");
    std::vector<TensorQuality> quality;
    for (std::size_t m = 0; m < sources.size(); ++m) {
      const TensorInfo& info = *sources[m].info;
      std::vector<float> zeroed;
      const fp4::WeightView stored{info.dtype, sources[m].bytes, info.shape[0], info.shape[1]};
      const auto weight = finite_view(stored, info, count_non_finite(stored), nan_policy_, zeroed);
      auto codes = outputs[kOutputsPerMember * m];
      auto scale_bytes = outputs[kOutputsPerMember * m + 1];
      // Scales are computed into aligned memory, then copied to the output bytes.
      std::vector<float> scales(scale_bytes.size() / sizeof(float));
      const std::span<std::uint8_t> code_span{reinterpret_cast<std::uint8_t*>(codes.data()),
                                              codes.size()};
      fp8::quantize(weight, {code_span, scales}, backend_);
      std::memcpy(scale_bytes.data(), scales.data(), scale_bytes.size());
      const auto energy = fp8::error_energy(weight, {code_span, scales, weight.rows, weight.cols});
      TensorQuality q;
      q.tensor = info.name;
      q.signal_energy = energy.signal;
      q.error_energy = energy.error;
      q.elements = info.element_count();
      quality.push_back(std::move(q));
    }
    return quality;
  }

 private:
  NanPolicy nan_policy_;
  fp4::Backend backend_;
};

class DecodedMembersTransform final : public Transform {
 public:
  DecodedMembersTransform(std::shared_ptr<const Transform> inner,
                          std::vector<std::optional<DequantizeRequest>> encoded_members)
      : inner_(std::move(inner)), encoded_members_(std::move(encoded_members)) {
    for (auto& member : encoded_members_)
      if (member) member->dtype = DType::BF16;
  }

  std::string describe() const override {
    return fmt::format("decode fp8-block → BF16, {}", inner_->describe());
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    std::vector<SourceTensor> decoded_sources;
    std::vector<TensorInfo> infos(encoded_members_.size());
    std::vector<std::vector<std::byte>> storage(encoded_members_.size());
    std::size_t next = 0;
    for (std::size_t m = 0; m < encoded_members_.size(); ++m) {
      const auto& member = encoded_members_[m];
      if (!member) {
        if (next >= sources.size())
          throw Error(ErrorClass::Internal, "fp8.sources", "fewer sources than members");
        decoded_sources.push_back(sources[next++]);
        continue;
      }
      if (next + 2 > sources.size())
        throw Error(ErrorClass::Internal, "fp8.sources", "fewer sources than members");
      const auto pair = sources.subspan(next, 2);
      next += 2;
      infos[m] = *pair[0].info;
      infos[m].dtype = DType::BF16;
      storage[m].resize(member->rows * member->cols * sizeof(std::uint16_t));
      const std::span<std::byte> out(storage[m]);
      decoder_for(*member)->run(pair, std::span(&out, 1));
      decoded_sources.push_back({&infos[m], storage[m]});
    }
    if (next != sources.size())
      throw Error(ErrorClass::Internal, "fp8.sources", "more sources than members");
    return inner_->run(decoded_sources, outputs);
  }

 private:
  static std::shared_ptr<const Transform> decoder_for(const DequantizeRequest& request) {
    return make_dequantize_transform(request);
  }

  std::shared_ptr<const Transform> inner_;
  std::vector<std::optional<DequantizeRequest>> encoded_members_;
};

}  // namespace

std::shared_ptr<const Transform> make_fp8_block_transform(const QuantizerSettings& settings) {
  return std::make_shared<Fp8BlockTransform>(settings.nan_policy, backend_for(settings.device));
}

std::shared_ptr<const Transform> with_decoded_members(
    std::shared_ptr<const Transform> inner,
    std::vector<std::optional<DequantizeRequest>> encoded_members) {
  return std::make_shared<DecodedMembersTransform>(std::move(inner), std::move(encoded_members));
}

}  // namespace qs
