#!/usr/bin/env bash
# Builds the CUDA kernels on the GPU machine (nvcc there, all its cores) and links test_cuda_kernels
# and bench_cuda with objects compiled on the CPU machine: a quick edit-measure loop when the CPU
# machine is slow. Folder layout next to this script: include/, src/ (kernels/cuda/*.cu and the
# headers they use), obj/ (libqforge.a, test_cuda_kernels.cpp.o, bench_cuda.cpp.o), lib/
# (libgtest.a, libgtest_main.a, libfmt.so.9, libgomp.so.1, and for the GPTQ binaries, which call the CPU
# GPTQ, libopenblas.so.0 with libgfortran.so.5 and libquadmath.so.0). bench/cuda/pack_device.sh
# fills such a folder from a CPU-machine build.
set -eu
d=$(cd "$(dirname "$0")" && pwd)
cd "$d"
archs=${QFORGE_CUDA_ARCHS:-90a}
cuda_lib=$(dirname "$(find / -xdev -name 'libcublas.so*' -path '*cuda*' 2>/dev/null | head -1)")
mkdir -p kobj
gencode=""
for a in $archs; do gencode="$gencode -gencode=arch=compute_$a,code=sm_$a"; done
pids=()
for f in src/kernels/cuda/*.cu; do
  # shellcheck disable=SC2086
  nvcc -std=c++20 -O3 $gencode --expt-relaxed-constexpr -lineinfo -Xptxas=-warn-spills -Iinclude -Isrc \
    -c "$f" -o "kobj/$(basename "$f" .cu).o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
blas=""
[ -f lib/libopenblas.so.0 ] && blas=lib/libopenblas.so.0
link() {
  # shellcheck disable=SC2086
  g++ -o "$1" "$2" kobj/*.o obj/libqforge.a "${@:3}" $blas -L"$cuda_lib" -L/usr/local/cuda/lib64 \
    -lcublas -lcublasLt -lcusolver -lcudart_static lib/libfmt.so.9 -fopenmp -lpthread -ldl -lrt -Wl,-rpath,"$d/lib"
}
link test_cuda_kernels obj/test_cuda_kernels.cpp.o lib/libgtest_main.a lib/libgtest.a
link bench_cuda obj/bench_cuda.cpp.o
if [ -f obj/test_cuda_gptq.cpp.o ]; then
  link test_cuda_gptq obj/test_cuda_gptq.cpp.o lib/libgtest_main.a lib/libgtest.a
  link bench_gptq obj/bench_gptq.cpp.o
fi
echo "device_build: built for $archs"
