#include "qforge/backend.h"

#include <mutex>
#include <thread>
#include <utility>

namespace qforge {
namespace {

BackendInfo cpu_probe() {
  BackendInfo info;
  info.name = "cpu";
  info.available = true;
  info.device = std::to_string(std::thread::hardware_concurrency()) + " hardware threads";
  return info;
}

struct Registry {
  std::mutex mutex;
  std::vector<std::pair<std::string, BackendProbe>> probes{{"cpu", cpu_probe}};
};

Registry& registry() {
  static Registry r;  // function-local: safe to use from other translation units' initialisers
  return r;
}

}  // namespace

void register_backend(std::string_view name, BackendProbe probe) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (auto& [n, p] : r.probes) {
    if (n == name) {
      p = probe;
      return;
    }
  }
  r.probes.emplace_back(std::string(name), probe);
}

std::vector<BackendInfo> list_backends() {
  std::vector<std::pair<std::string, BackendProbe>> probes;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    probes = r.probes;
  }
  std::vector<BackendInfo> out;
  out.reserve(probes.size());
  for (const auto& [name, probe] : probes) {
    BackendInfo info = probe();
    info.name = name;
    out.push_back(std::move(info));
  }
  return out;
}

BackendInfo find_backend(std::string_view name) {
  for (BackendInfo& info : list_backends()) {
    if (info.name == name) return info;
  }
  BackendInfo missing;
  missing.name = std::string(name);
  missing.detail = "not built into this binary";
  return missing;
}

}  // namespace qforge
