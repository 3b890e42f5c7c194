#include "qs/quant/bit_allocation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <queue>

#include "qs/ckpt/core/error.h"

namespace qs::alloc {
namespace {

// The choices an optimal Lagrangian solution can take for one item: its lower convex hull in
// the (bits, error) plane, cheapest first, error strictly falling and the error saved per extra
// bit (the slope) strictly falling too. Every other choice is, for every λ, no better than a hull
// point, so the bisection never needs it (the greedy pass looks at all choices again).
struct Hull {
  std::vector<int> points;     // choice indices, cheapest first
  std::vector<double> slopes;  // slopes[i]: error saved per bit from points[i] to points[i+1]
};

Hull lower_hull(const std::vector<Choice>& choices) {
  std::vector<int> order(choices.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  // Cheapest first; at equal bits the lower error, then the lower index, comes first and the
  // others are dominated.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (choices[a].bits != choices[b].bits) return choices[a].bits < choices[b].bits;
    return choices[a].error < choices[b].error;
  });
  Hull hull;
  for (int index : order) {
    const Choice& next = choices[index];
    // A dearer choice is only worth having when it lowers the error.
    if (!hull.points.empty() && next.error >= choices[hull.points.back()].error) continue;
    // Drop the last point while it lies on or above the segment from the one before it to this
    // one: the slope into it would not be steeper than the slope out of it.
    while (hull.points.size() >= 2) {
      const Choice& a = choices[hull.points[hull.points.size() - 2]];
      const Choice& b = choices[hull.points.back()];
      // (a→b) saves (a.e − b.e)/(b.c − a.c) per bit; (a→next) (a.e − n.e)/(n.c − a.c). b stays
      // only when it saves strictly more per bit; compared by cross-multiplication (no division
      // by tiny differences).
      const double lhs = (a.error - b.error) * (next.bits - a.bits);
      const double rhs = (a.error - next.error) * (b.bits - a.bits);
      if (lhs > rhs) break;
      hull.points.pop_back();
    }
    hull.points.push_back(index);
  }
  for (std::size_t i = 0; i + 1 < hull.points.size(); ++i) {
    const Choice& a = choices[hull.points[i]];
    const Choice& b = choices[hull.points[i + 1]];
    hull.slopes.push_back((a.error - b.error) / (b.bits - a.bits));
  }
  return hull;
}

// The hull point minimising error + λ·bits (ties: the cheaper one). Slopes fall along the hull,
// so it is the first point whose outgoing slope is not above λ.
std::size_t hull_point_at(const Hull& hull, double lambda) {
  std::size_t position = 0;
  while (position < hull.slopes.size() && hull.slopes[position] > lambda) ++position;
  return position;
}

void check_items(std::span<const Item> items) {
  for (const Item& item : items) {
    if (item.choices.empty())
      throw_bad_input("vq.allocation", "an item has no tiers to choose from", {}, item.name);
    for (const Choice& choice : item.choices)
      if (!std::isfinite(choice.bits) || !std::isfinite(choice.error) || choice.bits < 0.0 ||
          choice.error < 0.0)
        throw_bad_input("vq.allocation",
                        fmt::format("a tier's cost ({} bits) or error ({}) is negative or not "
                                    "finite",
                                    choice.bits, choice.error),
                        {}, item.name);
    if (item.pinned >= static_cast<int>(item.choices.size()))
      throw_bad_input(
          "vq.allocation",
          fmt::format("pinned to tier {} of a menu of {}", item.pinned, item.choices.size()), {},
          item.name);
  }
}

// One candidate of the greedy pass: moving `item` from its tier to `choice` saves `ratio` error
// per bit. The heap serves the best ratio, then the cheaper move, then the earlier item.
struct Upgrade {
  double ratio = 0.0;
  double extra_bits = 0.0;
  std::size_t item = 0;
  int choice = 0;
  std::uint64_t version = 0;  // the item's move count when this was computed
};
struct WorseUpgrade {
  bool operator()(const Upgrade& a, const Upgrade& b) const {
    if (a.ratio != b.ratio) return a.ratio < b.ratio;
    if (a.extra_bits != b.extra_bits) return a.extra_bits > b.extra_bits;
    if (a.item != b.item) return a.item > b.item;
    return a.choice > b.choice;
  }
};

// The item's best move (most error saved per extra bit) among those that fit in `left` bits.
std::optional<Upgrade> best_upgrade(const Item& item, std::size_t index, int current, double left,
                                    std::uint64_t version) {
  std::optional<Upgrade> best;
  const Choice& now = item.choices[current];
  for (std::size_t c = 0; c < item.choices.size(); ++c) {
    const Choice& candidate = item.choices[c];
    if (candidate.error >= now.error) continue;
    const double extra = candidate.bits - now.bits;
    if (extra > left) continue;
    // A cheaper choice with a lower error: a free gain (only possible off the hull start, e.g.
    // for an item the Lagrangian never moved); it goes first.
    const double ratio = extra <= 0.0 ? INFINITY : (now.error - candidate.error) / extra;
    const Upgrade upgrade{ratio, extra, index, static_cast<int>(c), version};
    if (!best || WorseUpgrade{}(*best, upgrade)) best = upgrade;
  }
  return best;
}

}  // namespace

Allocation allocate(std::span<const Item> items, double budget_bits) {
  check_items(items);
  if (!std::isfinite(budget_bits))
    throw_bad_input("vq.budget", fmt::format("the budget ({} bits) is not finite", budget_bits));

  // Pinned items first: they cost what they cost.
  double fixed_bits = 0.0, floor_bits = 0.0;
  std::vector<Hull> hulls(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].pinned >= 0) {
      fixed_bits += items[i].choices[items[i].pinned].bits;
    } else {
      hulls[i] = lower_hull(items[i].choices);
      floor_bits += items[i].choices[hulls[i].points.front()].bits;
    }
  }
  if (fixed_bits + floor_bits > budget_bits)
    throw_bad_input("vq.budget",
                    fmt::format("the target of {:.6g} bits is below the cheapest assignment "
                                "({:.6g} bits: every free item at its cheapest tier, {:.6g} bits "
                                "pinned)",
                                budget_bits, fixed_bits + floor_bits, fixed_bits));

  // The cost of the Lagrangian solution at λ falls as λ grows; it only changes at a hull slope.
  // Bisection over the sorted distinct slopes finds the smallest slope whose solution fits; at
  // that λ items on a segment of exactly that slope take its cheaper end.
  std::vector<double> breakpoints;
  for (const Hull& hull : hulls)
    breakpoints.insert(breakpoints.end(), hull.slopes.begin(), hull.slopes.end());
  std::sort(breakpoints.begin(), breakpoints.end());
  breakpoints.erase(std::unique(breakpoints.begin(), breakpoints.end()), breakpoints.end());
  const auto cost_at = [&](double lambda) {
    double bits = fixed_bits;
    for (std::size_t i = 0; i < items.size(); ++i)
      if (items[i].pinned < 0)
        bits += items[i].choices[hulls[i].points[hull_point_at(hulls[i], lambda)]].bits;
    return bits;
  };
  // λ = 0 takes every hull's last (lowest-error) point; when that fits, it is optimal.
  double lambda = 0.0;
  if (cost_at(0.0) > budget_bits) {
    // Invariant: breakpoints[high] fits (the largest puts every item at its cheapest point).
    std::size_t low = 0, high = breakpoints.size() - 1;
    if (cost_at(breakpoints[low]) <= budget_bits) {
      high = low;
    } else {
      while (high - low > 1) {  // breakpoints[low] does not fit
        const std::size_t middle = low + (high - low) / 2;
        (cost_at(breakpoints[middle]) <= budget_bits ? high : low) = middle;
      }
    }
    lambda = breakpoints[high];
  }

  Allocation allocation;
  allocation.tiers.resize(items.size());
  double spent = fixed_bits;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].pinned >= 0) {
      allocation.tiers[i] = items[i].pinned;
    } else {
      allocation.tiers[i] = hulls[i].points[hull_point_at(hulls[i], lambda)];
      spent += items[i].choices[allocation.tiers[i]].bits;
    }
  }

  // Greedy: spend what is left on the moves saving the most error per bit. The budget only
  // shrinks, so an item's best move that still fits when served is still its best (lazy heap);
  // one that no longer fits is recomputed.
  std::priority_queue<Upgrade, std::vector<Upgrade>, WorseUpgrade> heap;
  std::vector<std::uint64_t> versions(items.size(), 0);
  for (std::size_t i = 0; i < items.size(); ++i)
    if (items[i].pinned < 0)
      if (auto move = best_upgrade(items[i], i, allocation.tiers[i], budget_bits - spent, 0))
        heap.push(*move);
  while (!heap.empty()) {
    const Upgrade top = heap.top();
    heap.pop();
    if (top.version != versions[top.item]) continue;
    const double left = budget_bits - spent;
    if (top.extra_bits > left) {
      if (auto move = best_upgrade(items[top.item], top.item, allocation.tiers[top.item], left,
                                   versions[top.item]))
        heap.push(*move);
      continue;
    }
    allocation.tiers[top.item] = top.choice;
    spent += top.extra_bits;
    ++versions[top.item];
    if (auto move = best_upgrade(items[top.item], top.item, top.choice, budget_bits - spent,
                                 versions[top.item]))
      heap.push(*move);
  }

  for (std::size_t i = 0; i < items.size(); ++i) {
    const Choice& chosen = items[i].choices[allocation.tiers[i]];
    allocation.bits += chosen.bits;
    allocation.error += chosen.error;
    allocation.weights += items[i].weights;
  }
  return allocation;
}

}  // namespace qs::alloc
