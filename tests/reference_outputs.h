#pragma once
// Holding the runner to a fixture's reference outputs (reference.safetensors beside each bundled
// model, written by an independent implementation): read a stored tensor, measure how far our
// values are from it, and check that every row picks the same top token.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace qs::testing {

// The raw elements of tensor `name` in `reference_file`, reinterpreted as T (the fixtures store
// logits as F32 and token ids as I32).
std::vector<float> reference_floats(const std::filesystem::path& reference_file,
                                    const std::string& name);
std::vector<std::int32_t> reference_ints(const std::filesystem::path& reference_file,
                                         const std::string& name);

struct Difference {
  double max_abs = 0.0;
  double mean_abs = 0.0;
};

// Element-wise |ours − expected| (a size mismatch is a test failure).
Difference compare(const std::vector<float>& ours, const std::vector<float>& expected);

// Rows of `width` values: the index of each row's maximum is the same in both.
void expect_same_argmax(const std::vector<float>& ours, const std::vector<float>& expected,
                        std::size_t width);

}  // namespace qs::testing
