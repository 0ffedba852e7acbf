// Block processors for AWQ, SmoothQuant and activation quantization on the block-sequential
// pipeline (ptq.h): each rewrites the block (scales folded into norms / producer linears,
// activation-quantizing wrappers) around an inner weight quantizer (RTN or GPTQ).
#include <algorithm>
#include <cmath>
#include <set>

#include "qforge/act_quant.h"
#include "qforge/awq.h"
#include "qforge/observer.h"
#include "qforge/ptq_methods.h"
#include "qforge/smoothquant.h"
#include "qforge/tensor_roles.h"

namespace qforge {
namespace {

bool only_roles(const std::vector<LinearSite>& sites, std::initializer_list<TensorRole> roles) {
  return !sites.empty() && std::all_of(sites.begin(), sites.end(), [&](const LinearSite& s) {
    return std::find(roles.begin(), roles.end(), s.role) != roles.end();
  });
}

// A linear's weight as f32 [out, in] with its bias.
struct DenseCopy {
  LinearSite site;
  std::vector<float> w;
  std::vector<float> bias;
  int64_t rows = 0, cols = 0;
  AwqWeight view() { return {w.data(), rows, cols}; }
};

Expected<DenseCopy> dense_copy(Model& model, const LinearSite& site) {
  const Linear* l = model.linear(site);
  if (l == nullptr) return invalid_argument("no linear at " + linear_site_name(site));
  DenseCopy d;
  d.site = site;
  d.rows = l->out_features();
  d.cols = l->in_features();
  d.w.resize(static_cast<size_t>(d.rows * d.cols));
  l->dense_weight(d.w.data());
  d.bias = l->bias();
  return d;
}

Status install_dense(Model& model, const DenseCopy& d) {
  QFORGE_ASSIGN_OR_RETURN(auto layer, DenseLinear::create(Tensor::from_f32({d.rows, d.cols}, d.w), d.bias));
  return model.replace_linear(d.site, std::move(layer)).with_context(linear_site_name(d.site));
}

// Where a group's input scales fold: a norm of the block, or the output rows of a producer linear
// whose output feeds the group's input channel for channel.
struct FoldTarget {
  enum Kind { none, norm_fold, producer_fold } kind = none;
  Model::BlockNorm norm = Model::BlockNorm::attention;
  LinearSite producer;
};

FoldTarget fold_target(Model& model, int layer, const std::vector<LinearSite>& sites) {
  const ModelConfig& c = model.config();
  FoldTarget t;
  if (!c.pre_norm) return t;  // post-norm blocks: the norm does not precede the linears
  if (only_roles(sites, {TensorRole::attn_q, TensorRole::attn_k, TensorRole::attn_v, TensorRole::attn_qkv})) {
    t.kind = FoldTarget::norm_fold;
    t.norm = Model::BlockNorm::attention;
  } else if (only_roles(sites, {TensorRole::mlp_gate, TensorRole::mlp_up})) {
    t.kind = FoldTarget::norm_fold;
    t.norm = Model::BlockNorm::mlp;
  } else if (only_roles(sites, {TensorRole::attn_output})) {
    // o's input channel j is v's output channel j only without grouped-query sharing.
    const LinearSite v{layer, TensorRole::attn_v};
    const Linear* vl = model.linear(v);
    const Linear* ol = model.linear(sites.front());
    if (vl != nullptr && ol != nullptr && vl->out_features() == ol->in_features()) {
      t.kind = FoldTarget::producer_fold;
      t.producer = v;
    }
  } else if (only_roles(sites, {TensorRole::mlp_down}) && c.mlp == MlpType::gated_silu) {
    // down(silu(gate x) * up x): linear in up's output, so up's rows take 1/s exactly.
    t.kind = FoldTarget::producer_fold;
    t.producer = LinearSite{layer, TensorRole::mlp_up};
  }
  if (t.kind == FoldTarget::norm_fold && model.norm_weight(layer, t.norm).empty()) t.kind = FoldTarget::none;
  return t;
}

// Folds s: the norm (weight, bias) or the producer's rows (weight, bias) take 1/s.
Status fold_upstream(Model& model, int layer, const FoldTarget& t, const std::vector<float>& s) {
  if (t.kind == FoldTarget::norm_fold) {
    smoothquant_fold_norm(model.norm_weight(layer, t.norm), model.norm_bias(layer, t.norm), s);
    return Status::ok();
  }
  if (t.kind == FoldTarget::producer_fold) {
    QFORGE_ASSIGN_OR_RETURN(DenseCopy p, dense_copy(model, t.producer));
    awq_unscale_rows(p.view(), s.data(), p.bias.empty() ? nullptr : p.bias.data());
    return install_dense(model, p);
  }
  return Status::ok();
}

void rescale_group_stats(InputStats& st, const std::vector<float>& s) {
  const int64_t in = st.in_features;
  awq_rescale_stats(st.hessian.empty() ? nullptr : st.hessian.data(), st.sum_abs.empty() ? nullptr : st.sum_abs.data(),
                    in, s.data());
  for (size_t j = 0; j < st.absmax.size() && j < s.size(); ++j) st.absmax[j] /= s[j];
  for (size_t j = 0; j < st.sum_sq.size() && j < s.size(); ++j) st.sum_sq[j] /= static_cast<double>(s[j]) * s[j];
}

}  // namespace

// ---------------------------------------------------------------------------------------------

StatsRequest AwqProcessor::stats_request() const {
  StatsRequest r = inner_->stats_request();
  r.hessian = true;
  r.moments = true;
  return r;
}

Status AwqProcessor::process_block(BlockContext& ctx) {
  Model& model = ctx.model();
  const int layer = ctx.layer();
  // Pass 1: scale search and fold, group by group in forward order (AutoAWQ's order: qkv, v->o,
  // gate/up, up->down); each fold changes only its own group's input, whose statistics are
  // rescaled exactly.
  std::vector<std::vector<DenseCopy>> weights(ctx.groups().size());
  for (size_t gi = 0; gi < ctx.groups().size(); ++gi) {
    InputGroup& g = ctx.groups()[gi];
    const FoldTarget target = fold_target(model, layer, g.sites);
    std::optional<Scheme> scheme;
    for (const LinearSite& site : g.sites) {
      QFORGE_ASSIGN_OR_RETURN(DenseCopy d, dense_copy(model, site));
      if (!scheme) scheme = scheme_for_(site, d.rows, d.cols);
      weights[gi].push_back(std::move(d));
    }
    if (!scheme || target.kind == FoldTarget::none || g.stats.tokens <= 0) continue;
    std::vector<AwqWeight> views;
    for (DenseCopy& d : weights[gi]) views.push_back(d.view());
    const std::vector<double> mean_abs = g.stats.mean_abs();
    QFORGE_ASSIGN_OR_RETURN(AwqScaleResult r, awq_search_scales(views, g.stats.hessian.data(), mean_abs.data(),
                                                                g.stats.in_features, *scheme, options_));
    for (AwqWeight& v : views) awq_scale_columns(v, r.scales.data());
    for (const DenseCopy& d : weights[gi]) QFORGE_RETURN_IF_ERROR(install_dense(model, d));
    QFORGE_RETURN_IF_ERROR(fold_upstream(model, layer, target, r.scales));
    // The producer (v, up) belongs to an earlier group: refresh its copy.
    if (target.kind == FoldTarget::producer_fold)
      for (auto& group : weights)
        for (DenseCopy& d : group)
          if (d.site == target.producer) {
            QFORGE_ASSIGN_OR_RETURN(d, dense_copy(model, target.producer));
          }
    rescale_group_stats(g.stats, r.scales);
    log_.push_back(linear_site_name(g.sites.front()) + " group: alpha " + std::to_string(r.alpha) + ", error " +
                   std::to_string(r.error / std::max(r.error_rtn, 1e-300)) + " x RTN");
  }
  // Pass 2: clipping search on the scaled weights (AutoAWQ skips q and k: attention scores are
  // sensitive to their outliers).
  if (options_.clip) {
    for (size_t gi = 0; gi < ctx.groups().size(); ++gi) {
      InputGroup& g = ctx.groups()[gi];
      if (g.stats.hessian.empty() || g.stats.tokens <= 0) continue;
      for (DenseCopy& d : weights[gi]) {
        if (d.site.role == TensorRole::attn_q || d.site.role == TensorRole::attn_k || d.site.role == TensorRole::attn_qkv)
          continue;
        const std::optional<Scheme> scheme = scheme_for_(d.site, d.rows, d.cols);
        if (!scheme || scheme->granularity == Granularity::tensor) continue;
        QFORGE_ASSIGN_OR_RETURN(AwqClipResult c, awq_search_clip(d.view(), g.stats.hessian.data(), *scheme, options_));
        (void)c;
        QFORGE_RETURN_IF_ERROR(install_dense(model, d));
      }
    }
  }
  // The inner quantizer sees the block as it now is.
  if (!inner_->collects_itself() && (inner_->stats_request().hessian || inner_->stats_request().moments))
    QFORGE_RETURN_IF_ERROR(ctx.recollect());
  return inner_->process_block(ctx);
}

// ---------------------------------------------------------------------------------------------

StatsRequest SmoothQuantProcessor::stats_request() const {
  StatsRequest r = inner_->stats_request();
  r.moments = true;
  return r;
}

Status SmoothQuantProcessor::process_block(BlockContext& ctx) {
  Model& model = ctx.model();
  const int layer = ctx.layer();
  bool changed = false;
  for (InputGroup& g : ctx.groups()) {
    const FoldTarget target = fold_target(model, layer, g.sites);
    if (target.kind != FoldTarget::norm_fold || g.stats.absmax.empty()) continue;  // SmoothQuant: norm-fed groups
    std::vector<DenseCopy> ws;
    std::vector<AwqWeight> views;
    for (const LinearSite& site : g.sites) {
      QFORGE_ASSIGN_OR_RETURN(DenseCopy d, dense_copy(model, site));
      ws.push_back(std::move(d));
    }
    for (DenseCopy& d : ws) views.push_back(d.view());
    QFORGE_ASSIGN_OR_RETURN(std::vector<float> s, smoothquant_scales(g.stats.absmax.data(), g.stats.in_features, views, options_));
    for (AwqWeight& v : views) awq_scale_columns(v, s.data());
    for (const DenseCopy& d : ws) QFORGE_RETURN_IF_ERROR(install_dense(model, d));
    QFORGE_RETURN_IF_ERROR(fold_upstream(model, layer, target, s));
    rescale_group_stats(g.stats, s);
    changed = true;
  }
  if (changed && !inner_->collects_itself() && (inner_->stats_request().hessian || inner_->stats_request().moments))
    QFORGE_RETURN_IF_ERROR(ctx.recollect());
  return inner_->process_block(ctx);
}

// ---------------------------------------------------------------------------------------------

Status ActQuantProcessor::process_block(BlockContext& ctx) {
  QFORGE_RETURN_IF_ERROR(inner_->process_block(ctx));
  Model& model = ctx.model();
  const int layer = ctx.layer();
  std::vector<LinearSite> sites;
  for (const InputGroup& g : ctx.groups())
    for (const LinearSite& s : g.sites) sites.push_back(s);
  std::map<LinearSite, float> scales;
  if (act_scheme_is_static(scheme_)) {
    // Observe every linear input of the quantized block (per tensor) over the calibration windows.
    std::map<LinearSite, std::unique_ptr<Observer>> observers;
    ObserverOptions oo;
    oo.axis = ObserverAxis::per_tensor;
    oo.bits = 8;
    oo.symmetric = true;
    for (const LinearSite& s : sites) {
      QFORGE_ASSIGN_OR_RETURN(auto obs, make_observer(observer_, oo));
      observers[s] = std::move(obs);
    }
    Status hook_status;
    std::vector<int> hooks;
    for (const LinearSite& s : sites)
      hooks.push_back(model.add_hook(s, [&, s](const LinearActivations& a) {
        if (!hook_status) return;
        hook_status = observers[s]->observe(a.x, a.n_tokens, a.in_features);
      }));
    const int64_t batch = 2;
    std::vector<float> out(static_cast<size_t>(batch * ctx.ctx() * ctx.hidden_size()));
    Status run;
    for (int64_t first = 0; first < ctx.windows() && run && hook_status; first += batch) {
      const int64_t count = std::min(batch, ctx.windows() - first);
      run = ctx.forward_block(first, count, out.data());
    }
    for (int id : hooks) model.remove_hook(id);
    QFORGE_RETURN_IF_ERROR(run);
    QFORGE_RETURN_IF_ERROR(hook_status);
    for (const LinearSite& s : sites) {
      QFORGE_ASSIGN_OR_RETURN(Range r, observers[s]->range());
      scales[s] = act_static_scale(scheme_, std::max(std::fabs(r.min), std::fabs(r.max)));
    }
  }
  for (const LinearSite& s : sites) {
    const float scale = scales.count(s) ? scales[s] : 0.0f;
    QFORGE_RETURN_IF_ERROR(wrap_act_quant(model, s, scheme_, scale));
    if (act_scheme_is_static(scheme_)) {
      QFORGE_ASSIGN_OR_RETURN(std::string name, tensor_name_for_role(model.config().arch, s.role, s.layer, false));
      record_.scales[name] = scale;
    }
  }
  (void)layer;
  return Status::ok();
}

Status ActQuantProcessor::restore(Model& model, const LinearSite& site, const std::string& name, float scale) {
  QFORGE_RETURN_IF_ERROR(wrap_act_quant(model, site, scheme_, scale));
  if (act_scheme_is_static(scheme_)) record_.scales[name] = scale;
  return Status::ok();
}

}  // namespace qforge
