// Round-to-nearest block processor: the baseline every calibrated method is compared with.
#include "qforge/ptq.h"

namespace qforge {

Status install_quantized(Model& model, const LinearSite& site, const QuantizedTensor& q) {
  const Linear* old = model.linear(site);
  if (!old) return invalid_argument("no linear at " + linear_site_name(site));
  QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<QuantizedLinear> layer, QuantizedLinear::create(q, old->bias()));
  return model.replace_linear(site, std::move(layer));
}

Status RtnProcessor::process_block(BlockContext& ctx) {
  Model& model = ctx.model();
  for (const InputGroup& g : ctx.groups()) {
    for (const LinearSite& site : g.sites) {
      const Linear* lin = model.linear(site);
      const int64_t rows = lin->out_features(), cols = lin->in_features();
      const std::optional<Scheme> scheme = scheme_for_(site, rows, cols);
      if (!scheme) continue;
      std::vector<float> w(static_cast<size_t>(rows * cols));
      lin->dense_weight(w.data());
      Expected<QuantizedTensor> q = quantize(*scheme, w.data(), rows, cols);
      if (!q) return q.status().with_context(linear_site_name(site));
      QFORGE_RETURN_IF_ERROR(install_quantized(model, site, *q));
      results_[site] = std::move(*q);
    }
  }
  return Status::ok();
}

}  // namespace qforge
