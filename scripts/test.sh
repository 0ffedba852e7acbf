#!/usr/bin/env bash
# Configures, builds and runs every test. BUILD_DIR and extra CMake flags can be overridden:
#   BUILD_DIR=build-asan CMAKE_FLAGS="-DQFORGE_SANITIZE=address,undefined" bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" ${CMAKE_FLAGS:-}
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
ctest --test-dir "$build_dir" --output-on-failure -j "${JOBS:-$(nproc)}" ${CTEST_FLAGS:-}
