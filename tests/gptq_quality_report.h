#pragma once
// Reading the per-weight GPTQ rows of `quantize --json`'s "quality" report, as the CLI suites
// for integer and NVFP4 GPTQ both check them.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace qs::testing {

// Layer objectives summed over the report's rows.
struct GptqLossTotals {
  double gptq = 0.0;  // sum of gptq_relative_loss
  double rtn = 0.0;   // sum of rtn_relative_loss (round-to-nearest on the same grid)
  int weights = 0;    // rows read
};

// Checks that every row ran GPTQ (a loss, no fallback) and did no worse than round-to-nearest,
// and sums the losses for the caller's bound on the whole.
inline GptqLossTotals checked_gptq_losses(const nlohmann::json& report) {
  GptqLossTotals totals;
  for (const auto& row : report["quality"]) {
    if (!row.contains("gptq_relative_loss")) {
      ADD_FAILURE() << "no gptq_relative_loss: " << row.dump();
      continue;
    }
    EXPECT_TRUE(row["fallback"].is_null()) << row.dump();
    EXPECT_LE(row["gptq_relative_loss"].get<double>(), row["rtn_relative_loss"].get<double>());
    totals.gptq += row["gptq_relative_loss"].get<double>();
    totals.rtn += row["rtn_relative_loss"].get<double>();
    ++totals.weights;
  }
  return totals;
}

}  // namespace qs::testing
