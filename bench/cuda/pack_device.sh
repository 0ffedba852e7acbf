#!/usr/bin/env bash
# Packs what device_build.sh needs into one archive (xz: the device tool carries at most 64 MiB):
# headers and CUDA sources of this checkout, the host objects and libqforge.a of a CPU-machine
# build with -DQFORGE_CUDA=ON, and the shared libraries the GPU machine lacks.
# Usage: pack_device.sh BUILD_DIR OUT.tar.xz   (run from the repository root)
set -eu
build=$1
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/kernels" "$tmp/src/formats" "$tmp/obj" "$tmp/lib"
cp -r include "$tmp/"
cp -r src/kernels/cuda "$tmp/src/kernels/"
cp src/formats/*.h "$tmp/src/formats/"
cp bench/cuda/device_build.sh bench/cuda/run_device.sh bench/cuda/torch_peers.py "$tmp/"
cp "$build/libqforge.a" "$tmp/obj/"
for o in tests/cuda/CMakeFiles/test_cuda_kernels.dir/test_cuda_kernels.cpp.o bench/cuda/CMakeFiles/bench_cuda.dir/bench_cuda.cpp.o \
         tests/cuda/CMakeFiles/test_cuda_gptq.dir/test_cuda_gptq.cpp.o bench/cuda/CMakeFiles/bench_gptq.dir/bench_gptq.cpp.o; do
  # The GPTQ objects are optional (device_build.sh links those binaries only when present).
  if [ -f "$build/$o" ]; then cp "$build/$o" "$tmp/obj/"; else case $o in *gptq*) ;; *) echo "missing $build/$o" >&2; exit 1 ;; esac; fi
done
libdir=/usr/lib/x86_64-linux-gnu
cp "$libdir/libgtest.a" "$libdir/libgtest_main.a" "$tmp/lib/"
cp -L "$libdir/libfmt.so.9" "$libdir/libgomp.so.1" "$libdir/libgfortran.so.5" "$libdir/libquadmath.so.0" "$tmp/lib/"
cp -L "$libdir/libopenblas.so.0" "$tmp/lib/libopenblas.so.0"
tar -C "$tmp" -cJf "$out.tmp" . && mv "$out.tmp" "$out"
ls -la "$out"
