// qforge's packed quantized safetensors layout (see include/qforge/packed.h for the layout).
#include "qforge/packed.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace qforge {
namespace {

using json = nlohmann::json;

// The plane layout of a quantized tensor, derived from the scheme and shape only (the format
// table's scheme_plane_sizes is the single source of truth for the sizes).
struct PlaneLayout {
  PlaneSizes sizes;
  uint64_t row_bytes = 0;      // codes bytes per row
  int64_t groups_per_row = 0;
  uint64_t n_scales = 0;       // rows * groups_per_row, or 1 per tensor
  DType scales_dtype = DType::u8;
};

Expected<PlaneLayout> plane_layout(const Scheme& scheme, int64_t rows, int64_t cols, const std::string& name) {
  // validate_scheme bounds rows * cols, so the sizes below cannot overflow.
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, rows, cols).with_context("tensor '" + name + "'"));
  QuantizedTensor shell;
  shell.scheme = scheme;
  shell.rows = rows;
  shell.cols = cols;
  PlaneLayout l;
  l.sizes = scheme_plane_sizes(scheme, rows, cols);
  l.row_bytes = shell.packed_row_bytes();
  l.groups_per_row = shell.groups_per_row();
  l.n_scales = scheme.granularity == Granularity::tensor ? 1 : static_cast<uint64_t>(rows) * l.groups_per_row;
  // The scales plane carries the format's scale dtype when it holds one such value per group, raw
  // U8 otherwise (e.g. NF4 double quant stores 8-bit codes of the scales).
  const DType d = format_traits(scheme.format).scale_dtype;
  l.scales_dtype = l.sizes.scales == l.n_scales * dtype_size(d) ? d : DType::u8;
  return l;
}

Shape scales_plane_shape(const PlaneLayout& l, int64_t rows) {
  const uint64_t n = l.sizes.scales / dtype_size(l.scales_dtype);
  if (n == l.n_scales && l.groups_per_row > 1) return {rows, l.groups_per_row};
  return {static_cast<int64_t>(n)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

struct PackedWriter::Entry {
  enum class Kind { plain, lazy, quantized } kind;
  std::string name;
  // plain: the tensor (its owner keeps the bytes alive); lazy: dtype, shape and producer.
  Tensor tensor;
  DType dtype = DType::u8;
  Shape shape;
  std::function<Status(uint8_t*, size_t)> produce;
  // quantized: where its planes are in the spool.
  int64_t rows = 0;
  PlaneLayout layout;
  Spooled codes{}, scales{}, zeros{}, extra{};
};

PackedWriter::PackedWriter(std::string path) : path_(std::move(path)) {}

PackedWriter::~PackedWriter() {
  if (spool_fd_ >= 0) ::close(spool_fd_);
}

Status PackedWriter::set_metadata(const std::string& key, const std::string& value) {
  if (key == kPackedMetadataKey)
    return invalid_argument(path_ + ": metadata key '" + key + "' is reserved for qforge's manifest");
  metadata_[key] = value;
  return Status::ok();
}

Status PackedWriter::check_new_name(const std::string& name) {
  if (finished_) return invalid_argument(path_ + ": tensor '" + name + "' added after finish()");
  if (name.empty()) return invalid_argument(path_ + ": empty tensor name");
  if (names_.count(name)) return invalid_argument(path_ + ": duplicate tensor name '" + name + "'");
  return Status::ok();
}

Status PackedWriter::add_plain(const std::string& name, const Tensor& tensor) {
  QFORGE_RETURN_IF_ERROR(check_new_name(name));
  if (quantized_.count(name)) return invalid_argument(path_ + ": tensor '" + name + "' is also quantized");
  auto e = std::make_unique<Entry>();
  e->kind = Entry::Kind::plain;
  e->name = name;
  e->tensor = tensor.is_contiguous() ? tensor : tensor.contiguous();
  names_[name] = true;
  entries_.push_back(std::move(e));
  return Status::ok();
}

Status PackedWriter::add_plain_lazy(const std::string& name, DType dtype, const Shape& shape,
                                    std::function<Status(uint8_t*, size_t)> produce) {
  QFORGE_RETURN_IF_ERROR(check_new_name(name));
  auto e = std::make_unique<Entry>();
  e->kind = Entry::Kind::lazy;
  e->name = name;
  e->dtype = dtype;
  e->shape = shape;
  e->produce = std::move(produce);
  names_[name] = true;
  entries_.push_back(std::move(e));
  return Status::ok();
}

Status PackedWriter::open_spool() {
  if (spool_fd_ >= 0) return Status::ok();
  // Beside the output so it lands on the same file system; unlinked at once so it never outlives us.
  std::filesystem::path out(path_);
  std::filesystem::path dir = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  std::string tmpl = (dir / (out.filename().string() + ".spool.XXXXXX")).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return io_error(path_ + ": cannot create a temporary file in '" + dir.string() + "': " + std::strerror(errno));
  ::unlink(tmpl.c_str());
  spool_fd_ = fd;
  return Status::ok();
}

Expected<PackedWriter::Spooled> PackedWriter::spool(const std::vector<uint8_t>& bytes) {
  QFORGE_RETURN_IF_ERROR(open_spool());
  Spooled s{spool_size_, bytes.size()};
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(spool_fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(spool_size_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error(path_ + ": cannot write temporary data: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  spool_size_ += bytes.size();
  return s;
}

Status PackedWriter::read_spool(const Spooled& s, uint8_t* out, size_t nbytes) const {
  if (nbytes != s.nbytes) return Status::error(ErrorCode::internal, path_ + ": spool size mismatch");
  size_t done = 0;
  while (done < nbytes) {
    ssize_t n = ::pread(spool_fd_, out + done, nbytes - done, static_cast<off_t>(s.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error(path_ + ": cannot read temporary data back: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status PackedWriter::add_quantized(const std::string& name, const QuantizedTensor& q, DType dtype_orig,
                                   bool transposed) {
  QFORGE_RETURN_IF_ERROR(check_new_name(name));
  for (const char* suffix : {kPlaneCodes, kPlaneScales, kPlaneZeros, kPlaneExtra})
    QFORGE_RETURN_IF_ERROR(check_new_name(name + suffix));
  QFORGE_ASSIGN_OR_RETURN(PlaneLayout layout, plane_layout(q.scheme, q.rows, q.cols, name));
  const struct {
    const char* plane;
    size_t have, want;
  } planes[] = {{"codes", q.codes.size(), layout.sizes.codes},
                {"scales", q.scales.size(), layout.sizes.scales},
                {"zeros", q.zeros.size(), layout.sizes.zeros},
                {"extra", q.extra.size(), layout.sizes.extra}};
  for (const auto& pl : planes)
    if (pl.have != pl.want)
      return invalid_argument(path_ + ": tensor '" + name + "': " + pl.plane + " plane has " + std::to_string(pl.have) +
                              " bytes, " + q.scheme.name() + " needs " + std::to_string(pl.want));
  auto p = std::make_unique<Entry>();
  p->kind = Entry::Kind::quantized;
  p->name = name;
  p->rows = q.rows;
  p->layout = layout;
  QFORGE_ASSIGN_OR_RETURN(p->codes, spool(q.codes));
  QFORGE_ASSIGN_OR_RETURN(p->scales, spool(q.scales));
  QFORGE_ASSIGN_OR_RETURN(p->zeros, spool(q.zeros));
  QFORGE_ASSIGN_OR_RETURN(p->extra, spool(q.extra));

  PackedTensorInfo info;
  info.name = name;
  info.scheme = q.scheme;
  info.rows = q.rows;
  info.cols = q.cols;
  info.dtype_orig = dtype_orig;
  info.transposed = transposed;
  info.nbytes = q.nbytes();
  quantized_[name] = info;
  names_[name] = true;
  names_[name + kPlaneCodes] = true;
  if (!q.scales.empty()) names_[name + kPlaneScales] = true;
  if (!q.zeros.empty()) names_[name + kPlaneZeros] = true;
  if (!q.extra.empty()) names_[name + kPlaneExtra] = true;
  entries_.push_back(std::move(p));
  return Status::ok();
}

Status PackedWriter::finish() {
  if (finished_) return invalid_argument(path_ + ": finish() called twice");
  finished_ = true;
  SafetensorsWriter writer(path_);
  for (const auto& [k, v] : metadata_) writer.set_metadata(k, v);

  json manifest;
  manifest["format_version"] = kPackedFormatVersion;
  manifest["qforge_version"] = QFORGE_VERSION;
  manifest["command"] = command_;
  json tensors = json::object();
  for (const auto& [name, info] : quantized_) {
    tensors[name] = {{"scheme", info.scheme.name()},
                     {"format_id", static_cast<int>(info.scheme.format)},
                     {"shape", {info.rows, info.cols}},
                     {"dtype_orig", dtype_name(info.dtype_orig)}};
    if (info.transposed) tensors[name]["transposed"] = true;
  }
  manifest["tensors"] = std::move(tensors);
  writer.set_metadata(kPackedMetadataKey, manifest.dump());

  for (const auto& p : entries_) {
    if (p->kind == Entry::Kind::plain) {
      const Tensor& t = p->tensor;
      QFORGE_RETURN_IF_ERROR(writer.add(p->name, t.dtype(), t.shape(), t.data(), t.nbytes()));
      continue;
    }
    if (p->kind == Entry::Kind::lazy) {
      QFORGE_RETURN_IF_ERROR(writer.add_lazy(p->name, p->dtype, p->shape, p->produce));
      continue;
    }
    auto from_spool = [this](Spooled s) {
      return [this, s](uint8_t* out, size_t nbytes) { return read_spool(s, out, nbytes); };
    };
    QFORGE_RETURN_IF_ERROR(writer.add_lazy(p->name + kPlaneCodes, DType::u8,
                                           {p->rows, static_cast<int64_t>(p->layout.row_bytes)}, from_spool(p->codes)));
    if (p->scales.nbytes > 0)
      QFORGE_RETURN_IF_ERROR(writer.add_lazy(p->name + kPlaneScales, p->layout.scales_dtype,
                                             scales_plane_shape(p->layout, p->rows), from_spool(p->scales)));
    if (p->zeros.nbytes > 0)
      QFORGE_RETURN_IF_ERROR(writer.add_lazy(p->name + kPlaneZeros, DType::u8,
                                             p->layout.groups_per_row > 1 ? Shape{p->rows, p->layout.groups_per_row}
                                                                          : Shape{static_cast<int64_t>(p->zeros.nbytes)},
                                             from_spool(p->zeros)));
    if (p->extra.nbytes > 0)
      QFORGE_RETURN_IF_ERROR(writer.add_lazy(p->name + kPlaneExtra, DType::u8,
                                             {static_cast<int64_t>(p->extra.nbytes)}, from_spool(p->extra)));
  }
  Status st = writer.finish();
  entries_.clear();
  if (spool_fd_ >= 0) {
    ::close(spool_fd_);
    spool_fd_ = -1;
  }
  return st;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

Status manifest_error(const std::string& path, const std::string& what) {
  return parse_error(path + ": qforge manifest: " + what);
}

}  // namespace

Expected<PackedFile> PackedFile::open(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(path));
  return from_safetensors(std::move(file));
}

Expected<PackedFile> PackedFile::from_safetensors(SafetensorsFile file) {
  PackedFile pf;
  pf.file_ = std::move(file);
  const std::string& path = pf.file_.path();
  std::set<std::string> planes;
  auto it = pf.file_.metadata().find(kPackedMetadataKey);
  if (it != pf.file_.metadata().end()) {
    pf.has_manifest_ = true;
    json m = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (m.is_discarded() || !m.is_object()) return manifest_error(path, "not a JSON object");
    auto version = m.find("format_version");
    if (version == m.end() || !version->is_number_integer())
      return manifest_error(path, "missing integer 'format_version'");
    if (version->get<int64_t>() != kPackedFormatVersion)
      return unsupported(path + ": qforge manifest format_version " + std::to_string(version->get<int64_t>()) +
                         " is not supported (this build reads version " + std::to_string(kPackedFormatVersion) + ")");
    if (auto c = m.find("command"); c != m.end() && c->is_string()) pf.command_ = c->get<std::string>();
    if (auto v = m.find("qforge_version"); v != m.end() && v->is_string()) pf.qforge_version_ = v->get<std::string>();
    auto tensors = m.find("tensors");
    if (tensors == m.end() || !tensors->is_object()) return manifest_error(path, "missing object 'tensors'");

    for (const auto& [name, entry] : tensors->items()) {
      auto fail = [&](const std::string& what) { return manifest_error(path, "tensor '" + name + "': " + what); };
      if (!entry.is_object()) return fail("entry is not an object");
      auto scheme_it = entry.find("scheme");
      if (scheme_it == entry.end() || !scheme_it->is_string()) return fail("missing string 'scheme'");
      Expected<Scheme> scheme = Scheme::parse(scheme_it->get<std::string>());
      if (!scheme) return fail("unknown scheme '" + scheme_it->get<std::string>() + "': " + scheme.status().message());
      auto id_it = entry.find("format_id");
      if (id_it == entry.end() || !id_it->is_number_integer()) return fail("missing integer 'format_id'");
      if (id_it->get<int64_t>() != static_cast<int64_t>(scheme->format))
        return fail("format_id " + std::to_string(id_it->get<int64_t>()) + " does not match scheme '" +
                    scheme->name() + "' (format id " + std::to_string(static_cast<int>(scheme->format)) + ")");
      auto shape_it = entry.find("shape");
      if (shape_it == entry.end() || !shape_it->is_array() || shape_it->size() != 2 ||
          !(*shape_it)[0].is_number_integer() || !(*shape_it)[1].is_number_integer())
        return fail("'shape' must be [rows, cols]");
      PackedTensorInfo info;
      info.name = name;
      info.scheme = *scheme;
      info.rows = (*shape_it)[0].get<int64_t>();
      info.cols = (*shape_it)[1].get<int64_t>();
      auto dtype_it = entry.find("dtype_orig");
      if (dtype_it == entry.end() || !dtype_it->is_string()) return fail("missing string 'dtype_orig'");
      auto dtype = dtype_from_name(dtype_it->get<std::string>());
      if (!dtype) return fail("unknown dtype_orig '" + dtype_it->get<std::string>() + "'");
      info.dtype_orig = *dtype;
      if (auto tr = entry.find("transposed"); tr != entry.end()) {
        if (!tr->is_boolean()) return fail("'transposed' must be true or false");
        info.transposed = tr->get<bool>();
      }

      Expected<PlaneLayout> layout = plane_layout(info.scheme, info.rows, info.cols, name);
      if (!layout) return manifest_error(path, layout.status().message());
      if (pf.file_.find(name) != nullptr) return fail("also stored as a plain tensor");

      // Planes: each present exactly when the scheme has it, with the exact size and dtype.
      uint64_t total = 0;
      const struct {
        const char* suffix;
        size_t want;
        DType dtype;
      } plane_specs[] = {{kPlaneCodes, layout->sizes.codes, DType::u8},
                         {kPlaneScales, layout->sizes.scales, layout->scales_dtype},
                         {kPlaneZeros, layout->sizes.zeros, DType::u8},
                         {kPlaneExtra, layout->sizes.extra, DType::u8}};
      for (const auto& spec : plane_specs) {
        const std::string plane = name + spec.suffix;
        const SafetensorsTensorInfo* t = pf.file_.find(plane);
        if (spec.want == 0) {
          if (t != nullptr) return fail("unexpected plane '" + plane + "' (" + info.scheme.name() + " has none)");
          continue;
        }
        if (t == nullptr) return fail("plane '" + plane + "' is missing");
        if (t->dtype != spec.dtype)
          return fail("plane '" + plane + "' has dtype " + dtype_name(t->dtype) + ", expected " + dtype_name(spec.dtype));
        const uint64_t have = t->end - t->begin;
        if (have != spec.want)
          return fail("plane '" + plane + "' has " + std::to_string(have) + " bytes but " + info.scheme.name() +
                      " on [" + std::to_string(info.rows) + ", " + std::to_string(info.cols) + "] needs " +
                      std::to_string(spec.want));
        total += have;
        planes.insert(plane);
      }
      info.nbytes = total;
      pf.quantized_.push_back(std::move(info));
    }
  }
  for (const auto& t : pf.file_.tensors())
    if (!planes.count(t.name)) pf.plain_.push_back(t.name);
  std::sort(pf.plain_.begin(), pf.plain_.end());
  std::sort(pf.quantized_.begin(), pf.quantized_.end(),
            [](const PackedTensorInfo& a, const PackedTensorInfo& b) { return a.name < b.name; });
  return pf;
}

const PackedTensorInfo* PackedFile::find_quantized(const std::string& name) const {
  auto it = std::lower_bound(quantized_.begin(), quantized_.end(), name,
                             [](const PackedTensorInfo& a, const std::string& n) { return a.name < n; });
  return it != quantized_.end() && it->name == name ? &*it : nullptr;
}

std::map<std::string, std::string> PackedFile::user_metadata() const {
  auto m = file_.metadata();
  m.erase(kPackedMetadataKey);
  return m;
}

Expected<QuantizedTensor> PackedFile::load_quantized(const std::string& name) const {
  const PackedTensorInfo* info = find_quantized(name);
  if (info == nullptr) return invalid_argument(path() + ": no quantized tensor '" + name + "'");
  QuantizedTensor q;
  q.scheme = info->scheme;
  q.rows = info->rows;
  q.cols = info->cols;
  auto copy_plane = [&](const char* suffix, std::vector<uint8_t>* dst) -> Status {
    if (file_.find(name + suffix) == nullptr) return Status::ok();
    QFORGE_ASSIGN_OR_RETURN(Tensor t, file_.tensor(name + suffix));
    const auto* p = static_cast<const uint8_t*>(t.data());
    dst->assign(p, p + t.nbytes());
    return Status::ok();
  };
  QFORGE_RETURN_IF_ERROR(copy_plane(kPlaneCodes, &q.codes));
  QFORGE_RETURN_IF_ERROR(copy_plane(kPlaneScales, &q.scales));
  QFORGE_RETURN_IF_ERROR(copy_plane(kPlaneZeros, &q.zeros));
  QFORGE_RETURN_IF_ERROR(copy_plane(kPlaneExtra, &q.extra));
  return q;
}

Expected<Tensor> PackedFile::plain(const std::string& name) const {
  if (!std::binary_search(plain_.begin(), plain_.end(), name))
    return invalid_argument(path() + ": no plain tensor '" + name + "'");
  return file_.tensor(name);
}

// ---------------------------------------------------------------------------------------------
// Whole-file convenience

Status write_packed(const std::string& path, const std::map<std::string, QuantizedTensor>& quantized,
                    const std::map<std::string, Tensor>& plain, const std::map<std::string, DType>& dtype_orig,
                    const std::map<std::string, std::string>& metadata, const std::string& command) {
  PackedWriter writer(path);
  writer.set_command(command);
  for (const auto& [k, v] : metadata) QFORGE_RETURN_IF_ERROR(writer.set_metadata(k, v));
  for (const auto& [name, q] : quantized) {
    auto it = dtype_orig.find(name);
    QFORGE_RETURN_IF_ERROR(writer.add_quantized(name, q, it == dtype_orig.end() ? DType::f32 : it->second));
  }
  for (const auto& [name, t] : plain) QFORGE_RETURN_IF_ERROR(writer.add_plain(name, t));
  return writer.finish();
}

Expected<PackedCheckpoint> read_packed(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(PackedFile file, PackedFile::open(path));
  PackedCheckpoint ck;
  ck.metadata = file.user_metadata();
  std::vector<float> scratch;
  for (const auto& info : file.quantized()) {
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, file.load_quantized(info.name));
    // The format's own plane checks; the codes-plane check in open() bounds rows * cols by the file size.
    scratch.resize(static_cast<size_t>(info.rows) * static_cast<size_t>(info.cols));
    QFORGE_RETURN_IF_ERROR(dequantize(q, scratch.data()).with_context(path + ": tensor '" + info.name + "'"));
    ck.info[info.name] = info;
    ck.quantized[info.name] = std::move(q);
  }
  for (const auto& name : file.plain_names()) {
    QFORGE_ASSIGN_OR_RETURN(Tensor t, file.plain(name));
    ck.plain[name] = std::move(t);
  }
  return ck;
}

}  // namespace qforge
