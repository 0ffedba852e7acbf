#!/usr/bin/env bash
# Runs the CUDA tests, a compute-sanitizer memcheck pass, bench_cuda, bench_gptq and the PyTorch
# peers on the GPU machine, from a folder holding the built binaries (bench_cuda, test_cuda_kernels,
# test_cuda_gptq, bench_gptq), this script, torch_peers.py and lib/ (shared libraries the binaries
# need that the machine lacks).
# Usage: run_device.sh [--quick] [--no-test] [--no-bench] [--no-kernel-bench] [--no-gptq] ; logs go to $OUT (or ./out).
set -u
d=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$d/out}
mkdir -p "$out"
cublas_dir=$(dirname "$(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$d/lib:/usr/local/cuda/lib64:${cublas_dir}:${LD_LIBRARY_PATH:-}"
quick=""; run_test=1; run_bench=1; run_kbench=1; run_gptq=1
for a in "$@"; do
  case $a in --quick) quick=--quick ;; --no-test) run_test=0 ;; --no-bench) run_bench=0 ;;
    --no-kernel-bench) run_kbench=0 ;; --no-gptq) run_gptq=0 ;; esac
done
[ -x "$d/test_cuda_gptq" ] || run_gptq=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1
ldd "$d/bench_cuda" | grep 'not found'
if [ $run_test = 1 ]; then
  timeout 240 "$d/test_cuda_kernels" >"$out/test.log" 2>&1; echo "test rc=$?"
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|error' "$out/test.log" | head -30
  grep -E '^\[       OK \]' "$out/test.log"
  if [ $run_gptq = 1 ]; then
    OMP_WAIT_POLICY=passive timeout 300 "$d/test_cuda_gptq" >"$out/test_gptq.log" 2>&1; echo "test_gptq rc=$?"
    grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|error|gptq-equality|Expected|Which is|actual' "$out/test_gptq.log" | head -40
  fi
  timeout 120 compute-sanitizer --tool memcheck --leak-check no "$d/test_cuda_kernels" \
    --gtest_filter='CudaW4A16.Small*:CudaW4A16.Gemv*:CudaW8A8.Small*:CudaDequant.*' >"$out/memcheck.log" 2>&1
  echo "memcheck rc=$?"; tail -3 "$out/memcheck.log"
  if [ $run_gptq = 1 ]; then
    OMP_WAIT_POLICY=passive timeout 200 compute-sanitizer --tool memcheck --leak-check no "$d/test_cuda_gptq" \
      --gtest_filter='CudaGptq.Hessian*:CudaGptq.SameAsCpuInt3*:CudaGptq.SameAsCpuInt4Group128AsymAct*:CudaGptq.Rejects*' >"$out/memcheck_gptq.log" 2>&1
    echo "memcheck gptq rc=$?"; tail -3 "$out/memcheck_gptq.log"
  fi
fi
if [ $run_bench = 1 ]; then
  if [ $run_gptq = 1 ]; then OMP_WAIT_POLICY=passive "$d/bench_gptq" --compare-cpu 2>&1 | tee "$out/bench_gptq.log"; fi
  if [ $run_kbench = 1 ]; then
    "$d/bench_cuda" $quick 2>&1 | tee "$out/bench.log"
    PYTHONUNBUFFERED=1 timeout 300 python3 "$d/torch_peers.py" $quick 2>&1 | tee "$out/torch.log"
  fi
fi
