// qforge dequantize IN --out OUT: a qforge packed file back to a plain safetensors checkpoint.
#include <cstring>
#include <filesystem>
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "qforge/packed.h"

namespace qforge::cli {

Expected<DequantizeSummary> dequantize_file(const std::string& input, const std::string& output,
                                            std::optional<DType> dtype) {
  const double start = now_seconds();
  QFORGE_RETURN_IF_ERROR(check_output_path(output, "--out"));
  std::error_code ec;
  if (std::filesystem::exists(output, ec) && std::filesystem::equivalent(input, output, ec))
    return invalid_argument("--out '" + output + "' is the input file; choose another path");
  // Shared so the producers below keep the mapping alive during the write.
  QFORGE_ASSIGN_OR_RETURN(PackedFile opened, PackedFile::open(input));
  auto file = std::make_shared<PackedFile>(std::move(opened));
  if (!file->has_manifest())
    return invalid_argument(input + " has no qforge manifest: not a qforge packed file (nothing to dequantize)");

  SafetensorsWriter writer(output);
  for (const auto& [k, v] : file->user_metadata()) writer.set_metadata(k, v);
  DequantizeSummary summary;
  auto progress = std::make_shared<Progress>("dequantize", static_cast<int64_t>(file->quantized().size()), "tensors",
                                             progress_options());
  for (const PackedTensorInfo& info : file->quantized()) {
    // Default: back to the dtype the weight had before quantization (floats only).
    DType out_dtype = dtype ? *dtype : (dtype_is_float(info.dtype_orig) ? info.dtype_orig : DType::f32);
    std::string name = info.name;
    const bool transposed = info.transposed;
    Shape shape = transposed ? Shape{info.cols, info.rows} : Shape{info.rows, info.cols};
    QFORGE_RETURN_IF_ERROR(writer.add_lazy(
        name, out_dtype, shape,
        [file, name, out_dtype, transposed, progress](uint8_t* out, size_t nbytes) -> Status {
          QFORGE_RETURN_IF_ERROR(check_interrupted("dequantize"));
          QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, file->load_quantized(name));
          const size_t n = static_cast<size_t>(q.rows) * static_cast<size_t>(q.cols);
          if (nbytes != n * dtype_size(out_dtype))
            return Status::error(ErrorCode::internal, "tensor '" + name + "': output size mismatch");
          const std::string context = file->path() + ": tensor '" + name + "'";
          if (out_dtype == DType::f32 && !transposed) {
            QFORGE_RETURN_IF_ERROR(dequantize(q, reinterpret_cast<float*>(out)).with_context(context));
          } else {
            std::vector<float> values(n);
            QFORGE_RETURN_IF_ERROR(dequantize(q, values.data()).with_context(context));
            if (transposed) values = transpose(values.data(), q.rows, q.cols);
            QFORGE_RETURN_IF_ERROR(convert_from_f32(out_dtype, values.data(), out, n).with_context(context));
          }
          progress->tick();
          return Status::ok();
        }));
    summary.dequantized_tensors += 1;
  }
  for (const auto& name : file->plain_names()) {
    QFORGE_ASSIGN_OR_RETURN(Tensor t, file->plain(name));
    QFORGE_RETURN_IF_ERROR(writer.add_lazy(name, t.dtype(), t.shape(), [t](uint8_t* out, size_t nbytes) -> Status {
      QFORGE_RETURN_IF_ERROR(check_interrupted("dequantize"));
      std::memcpy(out, t.data(), nbytes);
      return Status::ok();
    }));
    summary.plain_tensors += 1;
  }
  Status st = writer.finish();
  progress->finish();
  QFORGE_RETURN_IF_ERROR(st);
  summary.output_bytes = static_cast<uint64_t>(std::filesystem::file_size(output, ec));
  summary.seconds = now_seconds() - start;
  return summary;
}

void add_dequantize_command(CLI::App& app, int* exit_code) {
  struct Options {
    std::string input;
    std::string output;
    std::string dtype;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd =
      app.add_subcommand("dequantize", "Turn a qforge packed file back into a plain safetensors checkpoint");
  cmd->add_option("path", opt->input, "A qforge packed .safetensors file")->required();
  cmd->add_option("-o,--out", opt->output, "Output .safetensors file (written atomically)")->required();
  cmd->add_option("--dtype", opt->dtype,
                  "dtype of the dequantized tensors (default: each tensor's dtype before quantization)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->callback([opt, exit_code] {
    std::optional<DType> dtype;
    if (!opt->dtype.empty()) dtype = dtype_from_name(opt->dtype);
    Expected<DequantizeSummary> s = dequantize_file(opt->input, opt->output, dtype);
    if (!s) {
      *exit_code = report_error(s.status());
      return;
    }
    std::printf("dequantized %lld tensors%s, copied %lld tensors; wrote %s (%s) in %s\n",
                static_cast<long long>(s->dequantized_tensors),
                opt->dtype.empty() ? " to their original dtype" : (" to " + opt->dtype).c_str(),
                static_cast<long long>(s->plain_tensors), opt->output.c_str(), format_bytes(s->output_bytes).c_str(),
                format_seconds(s->seconds).c_str());
    *exit_code = 0;
  });
}

}  // namespace qforge::cli
