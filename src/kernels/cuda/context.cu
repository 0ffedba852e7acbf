// Device discovery, backend registration, DeviceBuffer and Context.
#include <cstdio>
#include <utility>

#include "cuda_common.h"
#include "qforge/backend.h"

namespace qforge::cuda {

Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::ok();
  return Status::error(ErrorCode::io_error, std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) +
                                                " (" + cudaGetErrorString(err) + ")");
}

Status cublas_status(cublasStatus_t err, const char* what) {
  if (err == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return Status::error(ErrorCode::io_error, std::string("cuBLAS error in ") + what + ": " + cublasGetStatusName(err));
}

const char* act_type_name(ActType t) { return t == ActType::bf16 ? "bf16" : "f16"; }

bool available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

Expected<std::string> device_description() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) return cuda_status(err, "cudaGetDeviceCount");
  if (n == 0) return Status::error(ErrorCode::unsupported, "no CUDA device");
  cudaDeviceProp p{};
  QFORGE_CUDA_TRY(cudaGetDeviceProperties(&p, 0));
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %d MB L2, %.1f GiB; driver %d, runtime %d)", p.name, p.major,
                p.minor, p.multiProcessorCount, p.l2CacheSize >> 20,
                static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), driver, runtime);
  return std::string(buf);
}

namespace {
BackendInfo cuda_probe() {
  BackendInfo info;
  info.name = "cuda";
  Expected<std::string> d = device_description();
  if (d.has_value()) {
    info.available = true;
    info.device = *d;
  } else {
    info.detail = d.status().message();
  }
  return info;
}
// Registers on load of this object file, which every public entry point of the library pulls in.
const bool kRegistered = (qforge::register_backend("cuda", cuda_probe), true);
}  // namespace

void register_backend() {
  (void)kRegistered;
  qforge::register_backend("cuda", cuda_probe);
}

// ---------------------------------------------------------------- DeviceBuffer
Expected<DeviceBuffer> DeviceBuffer::allocate(size_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return Expected<DeviceBuffer>(std::move(b));
  QFORGE_CUDA_TRY(cudaMalloc(&b.ptr_, bytes));
  b.bytes_ = bytes;
  return Expected<DeviceBuffer>(std::move(b));
}

Expected<DeviceBuffer> DeviceBuffer::upload(const void* host, size_t bytes) {
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer b, allocate(bytes));
  if (bytes) QFORGE_CUDA_TRY(cudaMemcpy(b.ptr_, host, bytes, cudaMemcpyHostToDevice));
  return Expected<DeviceBuffer>(std::move(b));
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

Status DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_) return invalid_argument("DeviceBuffer::download: " + std::to_string(bytes) + " bytes asked, buffer holds " + std::to_string(bytes_));
  if (bytes) QFORGE_CUDA_TRY(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost));
  return Status::ok();
}

Status DeviceBuffer::fill_bytes(uint8_t value) {
  if (bytes_) QFORGE_CUDA_TRY(cudaMemset(ptr_, value, bytes_));
  return Status::ok();
}

// ---------------------------------------------------------------- Context
Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;

Context::Impl::~Impl() {
  for (auto& [key, plan] : fp8_plans) {
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.d) cublasLtMatrixLayoutDestroy(plan.d);
    if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  }
  if (stream) cudaStreamSynchronize(stream);
  if (splitk) cudaFree(splitk);
  if (scratch) cudaFree(scratch);
  if (lt_workspace) cudaFree(lt_workspace);
  if (lt) cublasLtDestroy(lt);
  if (solver) cusolverDnDestroy(solver);
  if (blas) cublasDestroy(blas);
  if (stream) cudaStreamDestroy(stream);
}

Status Context::Impl::ensure_splitk(size_t bytes) {
  if (bytes <= splitk_bytes) return Status::ok();
  QFORGE_CUDA_TRY(cudaStreamSynchronize(stream));
  if (splitk) cudaFree(splitk);
  splitk = nullptr;
  splitk_bytes = 0;
  QFORGE_CUDA_TRY(cudaMalloc(&splitk, bytes));
  QFORGE_CUDA_TRY(cudaMemset(splitk, 0, bytes));
  splitk_bytes = bytes;
  return Status::ok();
}

Status Context::Impl::splitk_workspace(size_t partials, size_t counters, float** partial, unsigned** counter) {
  const size_t poff = (partials * sizeof(float) + 255) / 256 * 256;
  QFORGE_RETURN_IF_ERROR(ensure_splitk(poff + counters * sizeof(unsigned)));
  *partial = static_cast<float*>(splitk);
  *counter = reinterpret_cast<unsigned*>(static_cast<char*>(splitk) + poff);
  return Status::ok();
}

Status Context::Impl::ensure_scratch(size_t bytes) {
  if (bytes <= scratch_bytes) return Status::ok();
  QFORGE_CUDA_TRY(cudaStreamSynchronize(stream));
  if (scratch) cudaFree(scratch);
  scratch = nullptr;
  scratch_bytes = 0;
  QFORGE_CUDA_TRY(cudaMalloc(&scratch, bytes));
  scratch_bytes = bytes;
  return Status::ok();
}

Status Context::Impl::ensure_solver() {
  if (solver) return Status::ok();
  if (cusolverDnCreate(&solver) != CUSOLVER_STATUS_SUCCESS) {
    solver = nullptr;
    return Status::error(ErrorCode::io_error, "cusolverDnCreate failed");
  }
  if (cusolverDnSetStream(solver, stream) != CUSOLVER_STATUS_SUCCESS)
    return Status::error(ErrorCode::io_error, "cusolverDnSetStream failed");
  return Status::ok();
}

Expected<std::unique_ptr<Context>> Context::create(int device) {
  int n = 0;
  QFORGE_CUDA_TRY(cudaGetDeviceCount(&n));
  if (device < 0 || device >= n)
    return invalid_argument("CUDA device " + std::to_string(device) + " requested, " + std::to_string(n) + " present");
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  QFORGE_CUDA_TRY(cudaSetDevice(device));
  QFORGE_CUDA_TRY(cudaDeviceGetAttribute(&impl->sm_count, cudaDevAttrMultiProcessorCount, device));
  QFORGE_CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  QFORGE_CUBLAS_TRY(cublasCreate(&impl->blas));
  QFORGE_CUBLAS_TRY(cublasSetStream(impl->blas, impl->stream));
  QFORGE_CUBLAS_TRY(cublasLtCreate(&impl->lt));
  impl->lt_workspace_bytes = size_t{32} << 20;
  QFORGE_CUDA_TRY(cudaMalloc(&impl->lt_workspace, impl->lt_workspace_bytes));
  QFORGE_CUBLAS_TRY(cublasSetWorkspace(impl->blas, impl->lt_workspace, impl->lt_workspace_bytes));
  return std::unique_ptr<Context>(new Context(std::move(impl)));
}

void* Context::stream() const { return impl_->stream; }

Status Context::synchronize() {
  QFORGE_CUDA_TRY(cudaStreamSynchronize(impl_->stream));
  QFORGE_CUDA_TRY(cudaGetLastError());
  return Status::ok();
}

}  // namespace qforge::cuda
