#pragma once
// The quality floor of quantized weights: a quantizing transform whose result keeps too little
// of a weight (SNR below the recipe's min_snr_db) fails the job naming the tensor, instead of
// writing a tensor that decodes to (nearly) zeros. A BF16 weight with one huge outlier under
// NVFP4 is the case that motivated it: every other block's scale underflows to 0.

#include <memory>

#include "qs/ckpt/plan/plan.h"

namespace qs {

// `inner` with each reported TensorQuality checked against `min_snr_db`; BadInput
// "quantize.signal_lost" names the first weight below it.
std::shared_ptr<const Transform> with_signal_floor(std::shared_ptr<const Transform> inner,
                                                   double min_snr_db);

}  // namespace qs
