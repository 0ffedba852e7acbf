#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for SECONDS (default 60),
# starting from the seed corpus in fuzz/corpus/<target>/ (and the dictionary fuzz/dict/<target>.dict
# when there is one). Findings (crash-*, leak-*, timeout-*) are written to $build_dir/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build_dir="${BUILD_DIR:-build-fuzz}"
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQFORGE_BUILD_FUZZ=ON -DQFORGE_BUILD_TESTS=OFF -DQFORGE_BUILD_BENCH=OFF \
  -DQFORGE_SANITIZE="address,undefined" -DQFORGE_FUZZ_INSTRUMENT=ON
cmake --build "$build_dir" -j "$(nproc)"
shopt -s nullglob
for bin in "$build_dir"/fuzz/fuzz_*; do
  name=$(basename "$bin")
  corpus="fuzz/corpus/${name#fuzz_}"
  work=$(mktemp -d)
  seeds=()
  [ -d "$corpus" ] && seeds=("$corpus")
  extra=()
  dict="fuzz/dict/${name#fuzz_}.dict"
  [ -f "$dict" ] && extra+=("-dict=$dict")
  findings="$build_dir/findings/${name}"
  mkdir -p "$findings"
  echo "fuzz: $name for ${seconds}s (seeds: ${seeds[*]:-none}; dict: ${extra[*]:-none})"
  "$bin" -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$findings/" "${extra[@]}" "$work" "${seeds[@]}"
  rm -rf "$work"
done
echo "fuzz: all targets ran without a finding"
