#pragma once
// What calibrated transforms derive from a module's statistics, shared by every transform of one
// job: prepared GPTQ Hessians (order, dead columns, U) and the NVFP4 hessian method's 16×16
// diagonal blocks. Keyed by the calibration entry holding the matrix (plus what was derived
// from it), so matrices calibrated on the same inputs (every routed expert's gate/up under
// all-experts calibration) reuse one: one factorization and one read of XᵀX per layer.

#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "qs/ckpt/plan/calibration_statistics.h"
#include "qs/ckpt/plan/plan.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/gptq.h"

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

class HessianCache {
 public:
  std::shared_ptr<const gptq::PreparedHessian> prepared(
      const std::string& key, const std::function<gptq::PreparedHessian()>& prepare) {
    std::lock_guard lock(mutex_);
    return prepared_.get(key, prepare);
  }
  std::shared_ptr<const fp4::BlockHessians> blocks(
      const std::string& key, const std::function<fp4::BlockHessians()>& make) {
    std::lock_guard lock(mutex_);
    return blocks_.get(key, make);
  }

 private:
  // Most recently used first: the plan visits a layer's experts in a row.
  template <typename Value, std::size_t kCapacity>
  struct Recent {
    std::list<std::pair<std::string, std::shared_ptr<const Value>>> entries;
    std::shared_ptr<const Value> get(const std::string& key,
                                     const std::function<Value()>& make) {
      for (auto it = entries.begin(); it != entries.end(); ++it)
        if (it->first == key) {
          entries.splice(entries.begin(), entries, it);
          return it->second;
        }
      auto value = std::make_shared<const Value>(make());
      entries.emplace_front(key, value);
      if (entries.size() > kCapacity) entries.pop_back();
      return value;
    }
  };
  std::mutex mutex_;
  // A GLM-5 expert input's prepared Hessian is 2 × 151 MB in f32: few are kept.
  Recent<gptq::PreparedHessian, 2> prepared_;
  // 16×16 per block is 64 B per column: a layer's gate/up and down, several layers.
  Recent<fp4::BlockHessians, 8> blocks_;
};

}  // namespace qs
