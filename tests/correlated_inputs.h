#pragma once
// Calibration statistics built in code for the GPTQ suites: XᵀX of inputs correlated the way
// real activations are, so that GPTQ has something to gain over round-to-nearest.

#include <cstdint>
#include <vector>

namespace qs::testing {

// Whether one 16-column block (columns 32-47, one NVFP4 scale block) never fires.
enum class DeadBlock { No, Yes };

// XᵀX (k × k, row-major) of `tokens` rows of correlated inputs: a shared rank-8 part plus noise,
// and every 37th channel six times larger. The same `seed` gives the same values with or without
// the dead block (its inputs are drawn, then zeroed).
std::vector<double> correlated_second_moments(std::uint64_t k, std::uint64_t tokens, unsigned seed,
                                              DeadBlock dead_block = DeadBlock::No);

}  // namespace qs::testing
