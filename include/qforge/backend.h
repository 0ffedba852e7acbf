// Compute backends: a small registry so tools can list what this build and machine offer.
//
// The CPU backend is always registered. Optional backends (CUDA: the qforge_cuda library, built
// with -DQFORGE_CUDA=ON) register a probe when their library is linked; the probe reports whether
// a usable device exists at run time. No accelerator headers are included here.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace qforge {

struct BackendInfo {
  std::string name;       // "cpu", "cuda"
  bool available = false;  // usable on this machine now
  std::string device;     // e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"; empty when unavailable
  std::string detail;     // why unavailable, or extra facts (driver/runtime versions)
};

using BackendProbe = BackendInfo (*)();

// Registers (or replaces) the probe of backend `name`. Thread-safe; meant for static initialisers.
void register_backend(std::string_view name, BackendProbe probe);
// Runs every registered probe, in registration order ("cpu" first).
std::vector<BackendInfo> list_backends();
// The probe result of one backend, or an entry with available = false and detail "not built".
BackendInfo find_backend(std::string_view name);

}  // namespace qforge
