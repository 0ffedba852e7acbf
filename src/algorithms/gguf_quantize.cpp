// The GGUF quantization plan (type per tensor, fallbacks, metadata, exact file size) and the
// streaming writer that executes it. Type rules live in gguf_presets.cpp.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "qforge/format.h"
#include "qforge/gguf_quantize.h"

namespace qforge {
namespace {

constexpr uint32_t kGgmlQuantVersion = 2;  // GGML_QNT_VERSION, general.quantization_version

bool is_quantizable(const GgufInputTensor& t) {
  if (t.role.is_bias || t.shape.size() < 2) return false;
  return t.role.role == TensorRole::token_embedding || t.role.role == TensorRole::output ||
         is_linear_weight(t.role.role);
}

std::string rule_text(const GgufPreset& preset, int index, bool tied_embedding) {
  const GgufPresetRule& r = gguf_preset_rules()[static_cast<size_t>(index)];
  std::string s = std::string(preset.name) + " rule: ";
  s += r.role == TensorRole::output ? (tied_embedding ? "output head (tied token_embd)" : "output head")
                                    : tensor_role_name(r.role);
  if (r.layers != GgufLayerSet::all) s += std::string(", ") + gguf_layer_set_description(r.layers);
  if (r.condition != GgufRuleCondition::always) s += std::string(", ") + gguf_rule_condition_description(r.condition);
  if (r.when_type) s += std::string(", was ") + ggml_type_name(*r.when_type);
  return s;
}

void set_key(std::vector<GgufKeyValue>* md, const std::string& key, GgufValue value) {
  for (auto& kv : *md)
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  md->push_back({key, std::move(value)});
}

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

// ---- exact file size (mirrors GgufWriter's layout) -----------------------------------------

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t array_payload_bytes(const GgufValue& v);

uint64_t value_bytes(const GgufValue& v) {
  switch (v.type()) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean: return 1;
    case GgufValueType::u16:
    case GgufValueType::i16: return 2;
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32: return 4;
    case GgufValueType::u64:
    case GgufValueType::i64:
    case GgufValueType::f64: return 8;
    case GgufValueType::string: return 8 + v.get_if<std::string>()->size();
    case GgufValueType::array: return array_payload_bytes(v);
  }
  return 0;
}

uint64_t array_payload_bytes(const GgufValue& v) {
  uint64_t n = 4 + 8;
  switch (v.element_type()) {
    case GgufValueType::string:
      for (const auto& s : *v.array_if<std::string>()) n += 8 + s.size();
      return n;
    case GgufValueType::array:
      for (const auto& item : *v.array_if<GgufValue>()) n += array_payload_bytes(item);
      return n;
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean: return n + v.size();
    case GgufValueType::u16:
    case GgufValueType::i16: return n + 2 * v.size();
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32: return n + 4 * v.size();
    default: return n + 8 * v.size();
  }
}

uint64_t gguf_file_bytes(const std::vector<GgufKeyValue>& md, const std::vector<GgufTensorPlan>& tensors) {
  uint64_t alignment = kGgufDefaultAlignment;
  uint64_t head = 4 + 4 + 8 + 8;
  for (const auto& kv : md) {
    head += 8 + kv.key.size() + 4 + value_bytes(kv.value);
    if (kv.key == "general.alignment")
      if (const uint32_t* a = kv.value.get_if<uint32_t>()) alignment = *a;
  }
  uint64_t data = 0;
  for (const auto& t : tensors) {
    head += 8 + t.name.size() + 4 + 8 * t.shape.size() + 4 + 8;
    data += align_up(t.nbytes, alignment);
  }
  if (tensors.empty()) return head;
  return align_up(head, alignment) + data;
}

Scheme scheme_for(GgmlType type) { return gguf_type_scheme(type); }

template <class Map>
const typename Map::mapped_type* find_in(const Map* map, const std::string& key) {
  if (map == nullptr) return nullptr;
  auto it = map->find(key);
  return it == map->end() ? nullptr : &it->second;
}
}  // namespace

Scheme gguf_type_scheme(GgmlType type) {
  const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(type));
  QFORGE_CHECK_MSG(f != nullptr, "GGUF type without a format-table row");
  Scheme s;
  s.format = f->id;
  s.bits = f->min_bits;
  s.granularity = f->default_granularity;
  s.group_size = f->default_granularity == Granularity::group ? f->default_group : 0;
  return s;
}

namespace {

std::string type_list_text(const std::vector<std::string>& items, size_t max_items = 1000) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) s += "\n  " + items[i];
  if (items.size() > max_items) s += "\n  ... and " + std::to_string(items.size() - max_items) + " more";
  return s;
}

}  // namespace

double GgufTensorPlan::bits_per_weight() const {
  const GgmlTypeInfo& info = ggml_type_info(type);
  return 8.0 * info.type_size / static_cast<double>(info.block_size);
}

double GgufQuantizePlan::bits_per_weight() const {
  return parameters > 0 ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(parameters) : 0.0;
}

double GgufQuantizePlan::quantized_bits_per_weight() const {
  return quantized_parameters > 0
             ? 8.0 * static_cast<double>(quantized_bytes) / static_cast<double>(quantized_parameters)
             : 0.0;
}

Expected<GgufQuantizePlan> plan_gguf_quantization(const GgufModelInput& input, const GgufQuantizeOptions& o) {
  if (o.preset == nullptr) return invalid_argument("no GGUF preset given");
  const GgufPreset& preset = *o.preset;
  const ModelConfig& c = input.config();
  const bool from_gguf = input.kind() == GgufInputKind::gguf;
  GgufQuantizePlan plan;
  plan.preset = &preset;

  for (size_t i = 0; i < input.tensors().size(); ++i) {
    const GgufInputTensor& t = input.tensors()[i];
    GgufTensorPlan p;
    p.input_index = i;
    p.name = t.name;
    p.shape = t.shape;
    p.source_type = t.type;
    p.quantizable = is_quantizable(t);
    const int64_t cols = t.cols();
    if (!p.quantizable) {
      if (from_gguf) {
        p.type = t.type;
        p.copy = true;
        p.reason = "not a quantized weight: copied";
      } else {
        p.type = GgmlType::F32;
        p.reason = t.shape.size() <= 1 ? "1-D: F32 (as llama.cpp)" : "not a quantized weight: F32";
      }
    } else {
      const bool tied_embedding = input.tied_embeddings() && t.role.role == TensorRole::token_embedding;
      const bool output_head = t.role.role == TensorRole::output || tied_embedding;
      GgufTensorContext ctx;
      ctx.role = tied_embedding ? TensorRole::output : t.role.role;
      ctx.layer = t.role.layer;
      ctx.n_layers = c.num_layers;
      ctx.n_head = c.num_heads;
      ctx.n_head_kv = c.num_kv_heads;
      ctx.row_length = cols;
      ctx.has_imatrix = o.imatrix != nullptr;
      int rule = -1;
      GgmlType type = gguf_preset_type(preset, ctx, o.pure, &rule);
      p.reason = rule < 0 ? std::string(preset.name) + (o.pure && preset.quantized() ? " (--pure)" : "") + " default"
                          : rule_text(preset, rule, tied_embedding);
      for (const GgufTypeOverride& ov : o.overrides)
        if (std::regex_search(t.name, ov.regex)) {
          type = ov.type;
          p.reason = ov.origin;
        }
      if (output_head && o.output_tensor_type) {
        type = *o.output_tensor_type;
        p.reason = "--output-tensor-type";
      }
      if (t.role.role == TensorRole::token_embedding && o.token_embedding_type) {
        type = *o.token_embedding_type;
        p.reason = "--token-embedding-type";
      }
      p.wanted = type;
      const int64_t block = ggml_type_info(type).block_size;
      if (cols % block != 0) {
        GgmlType fb = gguf_fallback_type(type);
        if (cols % ggml_type_info(fb).block_size != 0) fb = GgmlType::F16;
        p.fallback = true;
        p.fallback_reason = std::to_string(cols) + " columns are not a multiple of " + ggml_type_name(type) + "'s " +
                            std::to_string(block);
        type = fb;
        plan.fallbacks.push_back(t.name + ": " + ggml_type_name(p.wanted) + " -> " + ggml_type_name(type) + " (" +
                                 p.fallback_reason + ")");
      }
      p.type = type;
      if (from_gguf && type == t.type) {
        p.copy = true;
      } else if (ggml_type_info(t.type).quantized) {
        p.requantize = true;
        plan.requantized.push_back(t.name + " (" + ggml_type_name(t.type) + " -> " + ggml_type_name(type) + ")");
      }
      if (o.imatrix && ggml_type_info(type).quantized && !p.copy) {
        const ImatrixEntry* e = o.imatrix->find(t.name);
        if (e == nullptr) {
          plan.imatrix_missing.push_back(t.name);
        } else if (e->n_mat == 1 && e->n_cols == cols) {
          p.imatrix = true;
        } else if (t.role.role != TensorRole::token_embedding) {  // llama-quantize ignores token_embd's
          return invalid_argument(o.imatrix->path() + ": imatrix entry '" + t.name + "' has " +
                                  std::to_string(e->n_mat) + " x " + std::to_string(e->n_cols) +
                                  " values, the tensor has " + std::to_string(cols) +
                                  " columns (an imatrix of another model?)");
        }
      }
    }
    QFORGE_ASSIGN_OR_RETURN(p.nbytes, ggml_tensor_nbytes(p.type, std::vector<int64_t>(p.shape.rbegin(), p.shape.rend())));
    if (!p.copy && find_format_by_gguf_type(static_cast<int>(p.type)) == nullptr)
      return unsupported(t.name + ": qforge cannot write type " + ggml_type_name(p.type));
    plan.tensor_bytes += p.nbytes;
    plan.parameters += p.numel();
    if (p.quantizable) {
      plan.quantized_parameters += p.numel();
      plan.quantized_bytes += p.nbytes;
    }
    plan.tensors.push_back(std::move(p));
  }

  // Metadata: the model's keys, then how this file was made. Keys describing an earlier
  // quantization of a GGUF input are dropped.
  for (const GgufKeyValue& kv : input.metadata())
    if (!starts_with(kv.key, "qforge.") && !starts_with(kv.key, "quantize.imatrix.")) plan.metadata.push_back(kv);
  auto& md = plan.metadata;
  set_key(&md, "general.quantization_version", GgufValue(kGgmlQuantVersion));
  set_key(&md, "general.file_type", GgufValue(preset.file_type));
  set_key(&md, "general.quantized_by", GgufValue("qforge"));
  set_key(&md, "qforge.version", GgufValue(QFORGE_VERSION));
  set_key(&md, "qforge.preset", GgufValue(preset.name));
  if (o.pure) set_key(&md, "qforge.pure", GgufValue(true));
  std::vector<std::string> overrides;
  for (const auto& ov : o.overrides) overrides.push_back(ov.pattern + "=" + ggml_type_name(ov.type));
  set_key(&md, "qforge.tensor_type_overrides", GgufValue::array(overrides));
  if (o.output_tensor_type) set_key(&md, "qforge.output_tensor_type", GgufValue(ggml_type_name(*o.output_tensor_type)));
  if (o.token_embedding_type)
    set_key(&md, "qforge.token_embedding_type", GgufValue(ggml_type_name(*o.token_embedding_type)));
  set_key(&md, "qforge.fallbacks", GgufValue::array(plan.fallbacks));
  if (o.imatrix) {
    const Imatrix& im = *o.imatrix;
    const std::string file = std::filesystem::path(im.path()).filename().string();
    set_key(&md, "qforge.imatrix.file", GgufValue(file));
    set_key(&md, "qforge.imatrix.file_sha256", GgufValue(im.sha256()));
    set_key(&md, "qforge.imatrix.entries", GgufValue(static_cast<uint32_t>(im.entries().size())));
    set_key(&md, "qforge.imatrix.chunks", GgufValue(static_cast<uint32_t>(im.chunk_count())));
    // The keys llama-quantize writes, so llama.cpp tools show them too.
    set_key(&md, "quantize.imatrix.file", GgufValue(file));
    if (!im.datasets().empty()) set_key(&md, "quantize.imatrix.dataset", GgufValue(im.datasets().front()));
    set_key(&md, "quantize.imatrix.entries_count", GgufValue(static_cast<int32_t>(im.entries().size())));
    set_key(&md, "quantize.imatrix.chunks_count", GgufValue(static_cast<int32_t>(im.chunk_count())));
  }
  plan.file_bytes = gguf_file_bytes(plan.metadata, plan.tensors);
  return plan;
}

Status check_gguf_plan(const GgufQuantizePlan& plan, const GgufQuantizeOptions& o) {
  if (!o.allow_fallback && !plan.fallbacks.empty())
    return invalid_argument(std::to_string(plan.fallbacks.size()) +
                            " tensor(s) have rows their type's block does not divide and would fall back "
                            "(llama.cpp's fallback table):" +
                            type_list_text(plan.fallbacks) +
                            "\naccept with --allow-fallback, or choose types with --tensor-type REGEX=TYPE");
  if (!o.allow_requantize && !plan.requantized.empty())
    return invalid_argument(std::to_string(plan.requantized.size()) +
                            " input tensor(s) are already quantized and would be dequantized and quantized again, "
                            "which compounds the error:" +
                            type_list_text(plan.requantized, 20) +
                            "\nstart from an F32/F16/BF16 file, or accept with --allow-requantize");
  return Status::ok();
}

Expected<GgufWriteResult> write_gguf_model(const GgufModelInput& input, const GgufQuantizePlan& plan,
                                           const GgufQuantizeOptions& o, const std::string& output,
                                           const Progress::Options& progress_options, const std::string& label) {
  QFORGE_RETURN_IF_ERROR(check_gguf_plan(plan, o));
  const auto start = std::chrono::steady_clock::now();
  GgufWriter writer(output);
  for (const GgufKeyValue& kv : plan.metadata) QFORGE_RETURN_IF_ERROR(writer.set(kv.key, kv.value));
  // Progress in thousands of weights: tensors differ in size by orders of magnitude.
  auto kilo = [](const GgufTensorPlan& p) { return (p.numel() + 999) / 1000; };
  int64_t total = 0;
  for (const GgufTensorPlan& p : plan.tensors) total += kilo(p);
  Progress progress(label, total, "k weights", progress_options);
  for (const GgufTensorPlan& p : plan.tensors) {
    auto produce = [&input, &p, &o, &progress, &label, &kilo](uint8_t* out, size_t nbytes) -> Status {
      QFORGE_RETURN_IF_ERROR(check_interrupted(label));
      if (nbytes != p.nbytes) return Status::error(ErrorCode::internal, "tensor size differs from the plan");
      if (p.copy && find_in(o.replaced_f32, p.name) == nullptr) {
        const std::span<const uint8_t> bytes = input.raw_bytes(p.input_index);
        if (bytes.size() != nbytes)
          return Status::error(ErrorCode::internal, "copied tensor has " + std::to_string(bytes.size()) + " bytes");
        std::memcpy(out, bytes.data(), nbytes);
      } else if (const QuantizedTensor* pq = find_in(o.prequantized, p.name)) {
        const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(p.type));
        if (f == nullptr || pq->scheme.format != f->id || pq->codes.size() != nbytes)
          return Status::error(ErrorCode::internal, p.name + ": precomputed tensor is not " + ggml_type_name(p.type));
        std::memcpy(out, pq->codes.data(), nbytes);
      } else {
        std::vector<float> w;
        if (const std::vector<float>* rf = find_in(o.replaced_f32, p.name)) {
          if (static_cast<int64_t>(rf->size()) != p.numel())
            return Status::error(ErrorCode::internal, p.name + ": replacement has the wrong size");
          w = *rf;
        } else {
          QFORGE_ASSIGN_OR_RETURN(w, input.load_f32(p.input_index));
        }
        const int64_t cols = p.shape.empty() ? 1 : p.shape.back();
        const int64_t rows = p.numel() / cols;
        QuantizeOptions q_options;
        if (p.imatrix) {
          const ImatrixEntry* e = o.imatrix->find(p.name);
          q_options.importance = e->importance.data();
          q_options.importance_size = e->importance.size();
        }
        Expected<QuantizedTensor> q = quantize(scheme_for(p.type), w.data(), rows, cols, q_options);
        if (!q) return q.status();
        if (q->codes.size() != nbytes || !q->scales.empty() || !q->zeros.empty() || !q->extra.empty())
          return Status::error(ErrorCode::internal, std::string(ggml_type_name(p.type)) +
                                                        " planes do not match the GGUF tensor size");
        std::memcpy(out, q->codes.data(), nbytes);
      }
      progress.tick(kilo(p));
      return Status::ok();
    };
    QFORGE_RETURN_IF_ERROR(writer.add_tensor_lazy(p.name, p.type, p.shape, produce));
  }
  QFORGE_RETURN_IF_ERROR(writer.finish());
  progress.finish();
  GgufWriteResult r;
  std::error_code ec;
  r.file_bytes = static_cast<uint64_t>(std::filesystem::file_size(output, ec));
  r.tensors = static_cast<int64_t>(plan.tensors.size());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace qforge
