#pragma once
// Choosing each module's tier for a bits-per-weight budget (docs/algorithms/vq.md,
// "Bit allocation"): a multiple-choice knapsack. Each item (one expert's gate+up pair, which
// must share a tier, or one down_proj) has per tier a cost in bits and an error estimate; the
// solver picks one tier per item minimising the summed error with the summed cost within the
// budget. Pinned items (a recipe rule fixed their tier) count towards the budget but are not
// moved.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace qs::alloc {

struct Choice {
  double bits = 0.0;   // what the item costs at this tier (weights × bits per weight)
  double error = 0.0;  // estimated output error at this tier (any non-negative unit, shared)
};

struct Item {
  std::string name;             // for reports: the module (or "…experts.3.gate_up")
  std::vector<Choice> choices;  // one per tier of the menu, same order for every item
  int pinned = -1;              // ≥ 0: the tier is fixed
  std::uint64_t weights = 0;    // how many weights the item holds (only summed, for reports)
};

struct Allocation {
  std::vector<int> tiers;     // per item, index into its choices
  double bits = 0.0;          // Σ cost of the chosen tiers
  double error = 0.0;         // Σ error of the chosen tiers
  std::uint64_t weights = 0;  // Σ Item::weights (for bits per weight)
};

// Minimises Σ error subject to Σ bits ≤ budget_bits: the Lagrangian relaxation (bisection on
// λ over each item's lower convex hull), then a greedy pass spending what is left of the budget
// on the best remaining upgrades. Deterministic (ties: the cheaper tier, then the earlier
// item). Throws BadInput "vq.budget" naming the target when even the cheapest tier of every
// free item does not fit, "vq.allocation" naming the item for one without choices, a cost or
// error negative or not finite, or a pinned tier outside its menu.
//
// Optimality: the Lagrangian solution is optimal for the bits it spends; the LP relaxation at
// the budget differs from it by part of one hull step of one item, so the result's error is at
// most the optimum's plus the largest error drop of a single hull step (in practice, with many
// small items, it is the optimum or next to it). Costs are summed in double: exact while they
// are integers below 2^53 (weights × bits per weight in 1/128ths is).
Allocation allocate(std::span<const Item> items, double budget_bits);

}  // namespace qs::alloc
