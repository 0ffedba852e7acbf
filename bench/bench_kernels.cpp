// Fast CPU kernels (include/qforge/kernels.h), measured against the machine in the same run:
//   BM_ReadBandwidth/<streams per thread>   streaming sum over a buffer far larger than the L3 (the
//                      roofline for decode)
//   BM_Gemv/<fmt>/<rows>x<cols>   one token: GB/s of weight bytes read and the fraction of the
//                      measured bandwidth: of_bw against the probe at the start, of_near_bw against
//                      one taken right before the benchmark (near_bw_GB/s); weights rotate over
//                      copies so the working set exceeds L3
//   BM_Sgemm/<M>       OpenBLAS sgemm on the dequantized f32 weight [4096, 4096], M tokens
//   BM_Gemm/<fmt>[-a8]/<M>  the kernels on the same shape: GFLOP/s and the fraction of sgemm's
// Threads: QFORGE_BENCH_THREADS (default 2) for OpenMP and OpenBLAS. Pin them, e.g.
//   OMP_PROC_BIND=close OMP_PLACES=cores ./build/bench/bench_kernels
// QFORGE_ISA selects the kernel level as everywhere.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qforge/kernels.h"
#include "qforge/linear.h"

namespace {

using qforge::kernels::KernelMatrix;

int bench_threads() {
  const char* env = std::getenv("QFORGE_BENCH_THREADS");
  return env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : 2;
}

void set_threads() {
  omp_set_num_threads(bench_threads());
  qforge::set_blas_threads(bench_threads());
}

double g_read_bandwidth = 0;           // bytes/s, from BM_ReadBandwidth
std::map<int64_t, double> g_sgemm_flops;  // M -> flop/s of sgemm

// Sums `bytes` of buf over the threads (each a contiguous share, read as `streams` interleaved
// sequential streams); returns the bytes read. AVX2 loads when the CPU has them: a scalar loop
// is compute-bound below the memory bandwidth of current machines.
__attribute__((target("avx2"))) uint64_t sum_streams_avx2(const uint8_t* base, size_t part, int streams) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i < part; i += 128)
    for (int k = 0; k < streams; ++k) {
      const auto* p = reinterpret_cast<const __m256i*>(base + static_cast<size_t>(k) * part + i);
      const __m256i a = _mm256_add_epi64(_mm256_loadu_si256(p), _mm256_loadu_si256(p + 1));
      const __m256i b = _mm256_add_epi64(_mm256_loadu_si256(p + 2), _mm256_loadu_si256(p + 3));
      acc = _mm256_add_epi64(acc, _mm256_add_epi64(a, b));
    }
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), acc);
  return v[0] + v[1] + v[2] + v[3];
}

uint64_t sum_streams_scalar(const uint8_t* base, size_t part, int streams) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = 0; i < part; i += 32)
    for (int k = 0; k < streams; ++k) {
      const auto* p = reinterpret_cast<const uint64_t*>(base + static_cast<size_t>(k) * part + i);
      s0 += p[0], s1 += p[1], s2 += p[2], s3 += p[3];
    }
  return s0 + s1 + s2 + s3;
}

size_t stream_read(const uint8_t* buf, size_t bytes, int streams) {
  const bool avx2 = __builtin_cpu_supports("avx2");
  uint64_t sum = 0;
  size_t read = 0;
#pragma omp parallel reduction(+ : sum, read)
  {
    const size_t nt = static_cast<size_t>(omp_get_num_threads()), me = static_cast<size_t>(omp_get_thread_num());
    const size_t share = bytes / nt / 4096 * 4096, part = share / static_cast<size_t>(streams) / 128 * 128;
    const uint8_t* base = buf + me * share;
    sum += avx2 ? sum_streams_avx2(base, part, streams) : sum_streams_scalar(base, part, streams);
    read += part * static_cast<size_t>(streams);
  }
  benchmark::DoNotOptimize(sum);
  return read;
}

// A buffer of `bytes` (a multiple of 8) filled by the threads that will read it.
std::unique_ptr<uint64_t[]> read_buffer(size_t bytes) {
  std::unique_ptr<uint64_t[]> buf(new uint64_t[bytes / sizeof(uint64_t)]);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < bytes / sizeof(uint64_t); ++i) buf[i] = i;
  return buf;
}

constexpr int kStreamPatterns[] = {1, 2, 4, 8};

// Several access patterns, the best counts: 1, 2, 4 and 8 sequential streams per thread over its
// contiguous share (a GEMV reads a few rows or row groups at once; one stream alone can be limited
// by the prefetchers' concurrency below what the memory system delivers). Best bytes/s of `reps`
// reads per pattern; `per_pattern`, when given, receives each pattern's best.
double best_read_bandwidth(const uint64_t* buf, size_t bytes, int reps, double* per_pattern = nullptr) {
  double best = 0;
  for (size_t p = 0; p < std::size(kStreamPatterns); ++p) {
    double best_here = 0;
    for (int rep = 0; rep < reps; ++rep) {
      const double t0 = omp_get_wtime();
      const size_t read = stream_read(reinterpret_cast<const uint8_t*>(buf), bytes, kStreamPatterns[p]);
      best_here = std::max(best_here, static_cast<double>(read) / (omp_get_wtime() - t0));
    }
    if (per_pattern != nullptr) per_pattern[p] = best_here;
    best = std::max(best, best_here);
  }
  return best;
}

void BM_ReadBandwidth(benchmark::State& state) {
  set_threads();
  const size_t bytes = size_t{1} << 30;  // 1 GiB >> any L3
  const std::unique_ptr<uint64_t[]> buf = read_buffer(bytes);
  size_t read = 0;
  for (auto _ : state) read = stream_read(reinterpret_cast<const uint8_t*>(buf.get()), bytes, static_cast<int>(state.range(0)));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(read));
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(read) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// A weight of `scheme` [rows, cols]: 16 rows quantized from random values, repeated (the values
// do not matter for speed; quantizing 45M values with the reference quantizers would take long).
qforge::QuantizedTensor make_weight(const std::string& scheme_name, int64_t rows, int64_t cols) {
  const qforge::Scheme s = qforge::Scheme::parse(scheme_name).value();
  const int64_t seed_rows = 16;
  std::mt19937 rng(42);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(seed_rows * cols));
  for (float& v : w) v = d(rng);
  qforge::QuantizedTensor seed = qforge::quantize(s, w.data(), seed_rows, cols).value();
  qforge::QuantizedTensor q;
  q.scheme = s;
  q.rows = rows;
  q.cols = cols;
  const qforge::PlaneSizes sizes = qforge::scheme_plane_sizes(s, rows, cols);
  auto tile = [&](const std::vector<uint8_t>& src, size_t want) {
    std::vector<uint8_t> out(want);
    if (src.empty() || want == 0) return out;
    if (src.size() == 2 && want == 2) return src;  // per-tensor scale
    for (size_t i = 0; i < want; i += src.size()) std::memcpy(out.data() + i, src.data(), std::min(src.size(), want - i));
    return out;
  };
  q.codes = tile(seed.codes, sizes.codes);
  q.scales = tile(seed.scales, sizes.scales);
  q.zeros = tile(seed.zeros, sizes.zeros);
  return q;
}

// The last-level cache size from sysfs (0 if unknown).
size_t l3_bytes() {
  std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
  if (f == nullptr) return 0;
  unsigned long long v = 0;
  char unit = 0;
  const int got = std::fscanf(f, "%llu%c", &v, &unit);
  std::fclose(f);
  if (got < 1) return 0;
  return static_cast<size_t>(v) * (unit == 'K' ? 1024u : unit == 'M' ? 1024u * 1024u : 1u);
}

// Enough copies of the weight that cycling through them reads at least 4x the L3 (and 256 MiB):
// each GEMV then streams its weight from DRAM, as decode does. Server parts can have L3s of
// hundreds of MiB, in which a fixed 256 MiB rotation would stay cache-resident.
size_t rotation_bytes() { return std::max<size_t>(size_t{256} << 20, 4 * l3_bytes()); }

struct GemvSetup {
  std::vector<KernelMatrix> copies;
  size_t bytes = 0;
};

// Best of two reads of a 512 MiB buffer at each stream pattern (about 0.2 s).
double nearby_read_bandwidth() {
  const size_t bytes = size_t{512} << 20;
  static const std::unique_ptr<uint64_t[]> buf = read_buffer(bytes);
  return best_read_bandwidth(buf.get(), bytes, 2);
}

void BM_Gemv(benchmark::State& state, std::string scheme, int64_t rows, int64_t cols,
             qforge::kernels::ActPrecision precision) {
  set_threads();
  GemvSetup s;
  {
    qforge::QuantizedTensor q = make_weight(scheme, rows, cols);
    KernelMatrix m = KernelMatrix::create(q, precision).value();
    s.bytes = m.weight_bytes();
    const size_t copies = std::max<size_t>(2, std::min<size_t>(256, rotation_bytes() / s.bytes + 1));
    s.copies.push_back(std::move(m));
    for (size_t i = 1; i < copies; ++i) s.copies.push_back(KernelMatrix::create(q, precision).value());
  }
  std::vector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows));
  // The read bandwidth right before this benchmark: this machine's bandwidth drifts over minutes,
  // so a fraction against the probe taken at the start can move by +-10 % from drift alone.
  const double bw = nearby_read_bandwidth();
  size_t i = 0;
  for (auto _ : state) {
    s.copies[i].matmul(x.data(), 1, y.data());
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % s.copies.size();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(s.bytes));
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(s.bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  // Fraction of the read bandwidth: weight bytes per second / measured stream bytes per second.
  // Counters are finalised after the loop, so compute from the timer here.
  state.counters["of_bw"] = benchmark::Counter(
      g_read_bandwidth > 0 ? static_cast<double>(s.bytes) / g_read_bandwidth : 0, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["near_bw_GB/s"] = bw / 1e9;
  state.counters["of_near_bw"] =
      benchmark::Counter(static_cast<double>(s.bytes) / bw, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(qforge::kernels::isa_name(s.copies[0].variant_for(qforge::kernels::active_isa())));
}

constexpr int64_t kGemmN = 4096, kGemmK = 4096;

void BM_Sgemm(benchmark::State& state) {
  set_threads();
  const int64_t m = state.range(0);
  qforge::QuantizedTensor q = make_weight("q8_0", kGemmN, kGemmK);
  std::vector<float> w(static_cast<size_t>(kGemmN * kGemmK));
  (void)qforge::dequantize(q, w.data());
  std::vector<float> x(static_cast<size_t>(m * kGemmK), 0.25f), y(static_cast<size_t>(m * kGemmN));
  for (auto _ : state) {
    qforge::matmul_f32_wt(x.data(), m, w.data(), kGemmN, kGemmK, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flop = 2.0 * static_cast<double>(m * kGemmN * kGemmK);
  state.counters["GFLOP/s"] = benchmark::Counter(flop / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Gemm(benchmark::State& state, std::string scheme, qforge::kernels::ActPrecision precision) {
  set_threads();
  const int64_t m = state.range(0);
  KernelMatrix km = KernelMatrix::create(make_weight(scheme, kGemmN, kGemmK), precision).value();
  std::vector<float> x(static_cast<size_t>(m * kGemmK), 0.25f), y(static_cast<size_t>(m * kGemmN));
  for (auto _ : state) {
    km.matmul(x.data(), m, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flop = 2.0 * static_cast<double>(m * kGemmN * kGemmK);
  state.counters["GFLOP/s"] = benchmark::Counter(flop / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  const auto it = g_sgemm_flops.find(m);
  state.counters["of_sgemm"] = benchmark::Counter(it != g_sgemm_flops.end() && it->second > 0 ? flop / it->second : 0,
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(qforge::kernels::isa_name(km.variant_for(qforge::kernels::active_isa())));
}

const char* kGemvSchemes[] = {"q4_0", "q4_k", "q8_0", "q6_k", "int8-ch-sym", "int4-g128-asym", "f16", "bf16"};
const char* kGemmSchemes[] = {"q4_0", "q4_k", "q8_0", "q6_k", "int8-ch-sym", "int4-g128-asym", "f16"};

// Bandwidth and sgemm rates for the fractions: measured once before the registered benchmarks
// (Google Benchmark gives a benchmark no access to another's result).
void measure_baselines() {
  set_threads();
  {
    const size_t bytes = size_t{1} << 30;
    double per_pattern[std::size(kStreamPatterns)];
    g_read_bandwidth = best_read_bandwidth(read_buffer(bytes).get(), bytes, 5, per_pattern);
    std::printf("read bandwidth (GB/s, best of 5):");
    for (size_t p = 0; p < std::size(kStreamPatterns); ++p)
      std::printf(" %d stream%s %.2f", kStreamPatterns[p], kStreamPatterns[p] == 1 ? "" : "s", per_pattern[p] / 1e9);
    std::printf("\n");
  }
  qforge::QuantizedTensor q = make_weight("q8_0", kGemmN, kGemmK);
  std::vector<float> w(static_cast<size_t>(kGemmN * kGemmK));
  (void)qforge::dequantize(q, w.data());
  for (int64_t m : {64, 128, 256, 512}) {
    std::vector<float> x(static_cast<size_t>(m * kGemmK), 0.25f), y(static_cast<size_t>(m * kGemmN));
    // Warm up for 0.3 s (BLAS thread start, clock ramp), then the best of at least 5 runs / 0.5 s.
    for (const double start = omp_get_wtime(); omp_get_wtime() - start < 0.3;)
      qforge::matmul_f32_wt(x.data(), m, w.data(), kGemmN, kGemmK, y.data());
    double best = 0;
    const double start = omp_get_wtime();
    for (int rep = 0; rep < 5 || omp_get_wtime() - start < 0.5; ++rep) {
      const double t0 = omp_get_wtime();
      qforge::matmul_f32_wt(x.data(), m, w.data(), kGemmN, kGemmK, y.data());
      best = std::max(best, 2.0 * static_cast<double>(m * kGemmN * kGemmK) / (omp_get_wtime() - t0));
    }
    g_sgemm_flops[m] = best;
  }
  std::printf("threads %d, kernels %s; L3 %zu MiB, GEMV rotation >= %zu MiB; read bandwidth %.2f GB/s (best of the patterns above, over 1 GiB); sgemm GFLOP/s:",
              bench_threads(), qforge::kernels::isa_name(qforge::kernels::active_isa()), l3_bytes() >> 20,
              rotation_bytes() >> 20, g_read_bandwidth / 1e9);
  for (const auto& [m, f] : g_sgemm_flops) std::printf(" M=%lld %.1f", static_cast<long long>(m), f / 1e9);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  measure_baselines();
  benchmark::RegisterBenchmark("BM_ReadBandwidth", BM_ReadBandwidth)->Arg(1)->Arg(4)->UseRealTime()->Unit(benchmark::kMillisecond);
  const int64_t shapes[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}};
  // "/a8": int8 activations (llama.cpp's Q8_0/Q8_K); default int8x2 (see kernels.h).
  for (const char* s : kGemvSchemes)
    for (const auto& shape : shapes)
      for (auto p : {qforge::kernels::ActPrecision::int8x2, qforge::kernels::ActPrecision::int8}) {
        const std::string sn(s);
        const bool float_act = sn == "f16" || sn == "bf16" || sn == "int4-g128-asym";
        if (float_act && p == qforge::kernels::ActPrecision::int8) continue;
        benchmark::RegisterBenchmark((std::string("BM_Gemv/") + s + (p == qforge::kernels::ActPrecision::int8 ? "-a8/" : "/") +
                                      std::to_string(shape[0]) + "x" + std::to_string(shape[1]))
                                         .c_str(),
                                     BM_Gemv, sn, shape[0], shape[1], p)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
  benchmark::RegisterBenchmark("BM_Sgemm", BM_Sgemm)->RangeMultiplier(2)->Range(64, 512)->UseRealTime()->Unit(benchmark::kMillisecond);
  for (const char* s : kGemmSchemes)
    for (auto p : {qforge::kernels::ActPrecision::int8x2, qforge::kernels::ActPrecision::int8}) {
      const std::string sn(s);
      if ((sn == "f16" || sn == "int4-g128-asym") && p == qforge::kernels::ActPrecision::int8) continue;
      benchmark::RegisterBenchmark((std::string("BM_Gemm/") + s + (p == qforge::kernels::ActPrecision::int8 ? "-a8" : "")).c_str(),
                                   BM_Gemm, sn, p)
          ->RangeMultiplier(2)
          ->Range(64, 512)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
