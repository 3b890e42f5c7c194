#include "qs/quant/quantize_transforms.h"
#include "qs/quant/dequantize_transform.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/fp4_quantizer.h"
#include "transforms/fp8_block_transforms.h"
#include "transforms/integer_transforms.h"
#include "transforms/nvfp4_transforms.h"
#include "transforms/signal_guard.h"
#include "transforms/vq_transforms.h"
#include "transforms/weight_guard.h"

namespace qs {

std::optional<NanPolicy> parse_nan_policy(std::string_view text) {
  if (text == "error") return NanPolicy::Error;
  if (text == "zero") return NanPolicy::Zero;
  return std::nullopt;
}

namespace {

std::shared_ptr<const Transform> make_unguarded_transform(const QuantizeRequest& request,
                                                          QuantizerSettings& settings) {
  if (is_integer(request.action)) return make_integer_transform(request, settings);
  if (request.action == RecipeAction::Fp8Block) return make_fp8_block_transform(settings);
  if (request.action == RecipeAction::Vq) return make_vq_transform(request, settings);
  return make_nvfp4_transform(request, settings);
}

}  // namespace

std::shared_ptr<const Transform> make_quantize_transform(const QuantizeRequest& request,
                                                         QuantizerSettings& settings) {
  if (!is_quantizing(request.action)) {
    // An FP8 block-scaled Linear no rule quantizes: decoded to the dtype the plan asks for.
    if (request.encoded_members.size() != 1 || !request.encoded_members[0])
      throw Error(ErrorClass::Internal, "plan.not_quantizing",
                  fmt::format("a quantizing transform was asked for action {}",
                              recipe_action_name(request.action)));
    return make_dequantize_transform(*request.encoded_members[0]);
  }
  auto quantizer =
      with_signal_floor(make_unguarded_transform(request, settings), settings.min_snr_db);
  if (request.encoded_members.empty()) return quantizer;
  return with_decoded_members(std::move(quantizer), request.encoded_members);
}

}  // namespace qs
