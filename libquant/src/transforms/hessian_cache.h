#pragma once
// What calibrated transforms derive from a module's statistics, shared by every transform of one
// job (and its workers): prepared GPTQ Hessians (order, dead columns, U) and the NVFP4 hessian
// method's 16×16 diagonal blocks. Keyed by the calibration entry holding the matrix (plus what was
// derived from it), so matrices calibrated on the same inputs (every routed expert's gate/up under
// all-experts calibration) reuse one: one factorization and one read of XᵀX per layer.

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qs/ckpt/plan/calibration_statistics.h"
#include "qs/ckpt/plan/plan.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/gptq.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

// The module path of a weight ("….experts.3.gate_proj" of "….experts.3.gate_proj.weight").
inline std::string module_of(const TensorInfo& info) {
  return info.name.substr(0, info.name.rfind('.'));
}

// The calibration entry holding the module's matrix; empty when it has none (a routed expert
// the router never picked).
inline std::string statistics_key(const CalibrationStatistics& calibration,
                                  const std::string& module) {
  const auto* entry = calibration.find(module);
  if (!entry) return {};
  return entry->shared_with.empty() ? entry->module : entry->shared_with;
}

// An item's members grouped by the statistics entry holding their matrix, in first-seen order
// (an empty key: members without statistics). Members calibrated on one matrix (gate and up)
// are stacked into one GPTQ problem.
inline std::vector<std::pair<std::string, std::vector<std::size_t>>> members_by_statistics(
    const CalibrationStatistics& calibration, std::span<const SourceTensor> sources) {
  std::vector<std::pair<std::string, std::vector<std::size_t>>> groups;
  for (std::size_t m = 0; m < sources.size(); ++m) {
    const auto key = statistics_key(calibration, module_of(*sources[m].info));
    const auto found = std::find_if(groups.begin(), groups.end(),
                                    [&](const auto& group) { return group.first == key; });
    if (found == groups.end())
      groups.push_back({key, {m}});
    else
      found->second.push_back(m);
  }
  return groups;
}

class HessianCache {
 public:
  // With several transform workers (one per device) each keeps about two of each kind in use.
  explicit HessianCache(std::size_t workers = 1)
      : prepared_(2 * std::max<std::size_t>(workers, 1)),
        blocks_(8 * std::max<std::size_t>(workers, 1)) {}

  std::shared_ptr<const gptq::PreparedHessian> prepared(
      const std::string& key, const std::function<gptq::PreparedHessian()>& prepare) {
    return prepared_.get(key, prepare);
  }
  std::shared_ptr<const fp4::BlockHessians> blocks(
      const std::string& key, const std::function<fp4::BlockHessians()>& make) {
    return blocks_.get(key, make);
  }

 private:
  // Most recently used first: the plan visits a layer's experts in a row. A value being made is
  // waited for, not made twice; different keys are made side by side.
  template <typename Value>
  class Recent {
   public:
    explicit Recent(std::size_t capacity) : capacity_(capacity) {}

    std::shared_ptr<const Value> get(const std::string& key, const std::function<Value()>& make) {
      std::promise<Made> promise;
      std::shared_future<Made> made;
      std::uint64_t number = 0;  // the entry this call made and fills; 0 when found
      {
        std::lock_guard lock(mutex_);
        for (auto it = entries_.begin(); it != entries_.end(); ++it)
          if (it->key == key) {
            entries_.splice(entries_.begin(), entries_, it);
            made = it->made;
            break;
          }
        if (!made.valid()) {
          number = ++count_;
          made = promise.get_future().share();
          entries_.push_front({key, made, number});
          if (entries_.size() > capacity_) entries_.pop_back();
        }
      }
      if (number == 0) return made.get();  // ready, or being made by another worker
      try {
        promise.set_value(std::make_shared<const Value>(make()));
      } catch (...) {
        {  // not kept: the next item asks again (and fails on its own if it must)
          std::lock_guard lock(mutex_);
          entries_.remove_if([&](const Entry& entry) { return entry.number == number; });
        }
        promise.set_exception(std::current_exception());
      }
      return made.get();
    }

   private:
    using Made = std::shared_ptr<const Value>;
    struct Entry {
      std::string key;
      std::shared_future<Made> made;
      std::uint64_t number;
    };
    std::size_t capacity_;
    std::mutex mutex_;
    std::list<Entry> entries_;
    std::uint64_t count_ = 0;
  };

  // A GLM-5 expert input's prepared Hessian is 2 × 151 MB in f32: few are kept.
  Recent<gptq::PreparedHessian> prepared_;
  // 16×16 per block is 64 B per column: a layer's gate/up and down, several layers.
  Recent<fp4::BlockHessians> blocks_;
};

// The prepared Hessian a GPTQ sweep of `cols` columns uses: from the cache under `cache_key`
// (its factorization timed into `times` when this call makes it), or for an empty `key` (no
// statistics: an expert no calibration token reached) one that falls back to round-to-nearest.
inline std::shared_ptr<const gptq::PreparedHessian> prepared_hessian(
    HessianCache& cache, const CalibrationStatistics& calibration, const std::string& key,
    const std::string& cache_key, std::uint64_t cols, const gptq::Settings& settings,
    gptq::Backend backend, QuantizeStageTimes* times) {
  if (key.empty()) {
    auto unrouted = std::make_shared<gptq::PreparedHessian>(
        gptq::prepare_hessian(std::vector<double>(cols * cols, 0.0), cols, 0, settings));
    unrouted->fallback = "no calibration tokens reached this expert";
    return unrouted;
  }
  return cache.prepared(cache_key, [&] {
    const auto* entry = calibration.find(key);
    auto second_moments = calibration.second_moments(key);
    const auto start = std::chrono::steady_clock::now();
    auto prepared =
        gptq::prepare_hessian(second_moments, cols, entry ? entry->tokens : 0, settings, backend);
    if (times) QuantizeStageTimes::add_since(times->factorization_ns, start);
    return prepared;
  });
}

}  // namespace qs
