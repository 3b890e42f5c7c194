#include "reference_outputs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qs/ckpt/io/checkpoint.h"

namespace qs::testing {
namespace {

template <typename T>
std::vector<T> reference_values(const std::filesystem::path& reference_file,
                                const std::string& name) {
  const auto reference = Checkpoint::open(reference_file);
  const auto location = reference.at(name);
  const auto bytes = location.shard->read(*location.info);
  std::vector<T> values(bytes.size() / sizeof(T));
  std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

}  // namespace

std::vector<float> reference_floats(const std::filesystem::path& reference_file,
                                    const std::string& name) {
  return reference_values<float>(reference_file, name);
}

std::vector<std::int32_t> reference_ints(const std::filesystem::path& reference_file,
                                         const std::string& name) {
  return reference_values<std::int32_t>(reference_file, name);
}

Difference compare(const std::vector<float>& ours, const std::vector<float>& expected) {
  EXPECT_EQ(ours.size(), expected.size());
  Difference difference;
  for (std::size_t i = 0; i < ours.size() && i < expected.size(); ++i) {
    const double gap = std::fabs(static_cast<double>(ours[i]) - expected[i]);
    difference.max_abs = std::max(difference.max_abs, gap);
    difference.mean_abs += gap;
  }
  difference.mean_abs /= static_cast<double>(std::max<std::size_t>(ours.size(), 1));
  return difference;
}

void expect_same_argmax(const std::vector<float>& ours, const std::vector<float>& expected,
                        std::size_t width) {
  ASSERT_EQ(ours.size(), expected.size());
  for (std::size_t row = 0; row < expected.size() / width; ++row) {
    const auto begin = [&](const std::vector<float>& v) { return v.begin() + row * width; };
    EXPECT_EQ(std::max_element(begin(ours), begin(ours) + width) - begin(ours),
              std::max_element(begin(expected), begin(expected) + width) - begin(expected))
        << "row " << row;
  }
}

}  // namespace qs::testing
