#!/usr/bin/env bash
# Installs every Debian 12 package qforge needs to build, test, fuzz and benchmark.
# Run as root; idempotent (apt-get skips what is already installed).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it calls apt-get)" >&2
  exit 1
fi
packages=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev libomp-14-dev llvm
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libopenblas-dev liblapack-dev
  libsentencepiece-dev
  libvalijson-dev  # JSON Schema validation of quantization cards in the tests
  chromium         # the HTML card rendering test (headless)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup.sh: all ${#packages[@]} packages present"
