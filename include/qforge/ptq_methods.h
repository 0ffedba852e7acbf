// Calibrated methods built on the block-sequential pipeline (ptq.h) around an inner weight
// quantizer (RtnProcessor or GptqProcessor):
//   AwqProcessor          AWQ scale search + exact fold + clipping search (awq.h), then the inner
//                         quantizer on the rescaled block ("awq" = AWQ + RTN, "awq+gptq")
//   SmoothQuantProcessor  SmoothQuant migration scales folded into the norms (smoothquant.h), then
//                         the inner quantizer (W8A8: int8-ch-sym weights)
//   ActQuantProcessor     after the inner processor: static activation scales observed on the
//                         quantized block's linear inputs (observer.h, per tensor) and every block
//                         linear wrapped in an ActQuantLinear (act_quant.h), so later blocks are
//                         calibrated on activation-quantized outputs; the record is written with
//                         the output
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "qforge/act_quant.h"
#include "qforge/awq.h"
#include "qforge/ptq.h"
#include "qforge/smoothquant.h"

namespace qforge {

class AwqProcessor final : public BlockProcessor {
 public:
  // `scheme_for` gives the target scheme the searches quantize with (the inner's own).
  AwqProcessor(SchemeForSite scheme_for, AwqOptions options, std::unique_ptr<BlockProcessor> inner)
      : scheme_for_(std::move(scheme_for)), options_(options), inner_(std::move(inner)) {}
  std::string name() const override { return "awq+" + inner_->name(); }
  StatsRequest stats_request() const override;
  Status process_block(BlockContext& ctx) override;
  BlockProcessor& inner() { return *inner_; }
  // One line per searched group: chosen alpha and error relative to RTN.
  const std::vector<std::string>& log() const { return log_; }

 private:
  SchemeForSite scheme_for_;
  AwqOptions options_;
  std::unique_ptr<BlockProcessor> inner_;
  std::vector<std::string> log_;
};

class SmoothQuantProcessor final : public BlockProcessor {
 public:
  SmoothQuantProcessor(SmoothQuantOptions options, std::unique_ptr<BlockProcessor> inner)
      : options_(options), inner_(std::move(inner)) {}
  std::string name() const override { return "smoothquant+" + inner_->name(); }
  StatsRequest stats_request() const override;
  Status process_block(BlockContext& ctx) override;
  BlockProcessor& inner() { return *inner_; }

 private:
  SmoothQuantOptions options_;
  std::unique_ptr<BlockProcessor> inner_;
};

class ActQuantProcessor final : public BlockProcessor {
 public:
  // `observer`: a make_observer spec ("minmax", "percentile:99.99", ...) for static schemes.
  ActQuantProcessor(ActScheme scheme, std::string observer, std::unique_ptr<BlockProcessor> inner)
      : scheme_(scheme), observer_(std::move(observer)), inner_(std::move(inner)) {
    record_.scheme = scheme;
    if (act_scheme_is_static(scheme)) record_.observer = observer_;
  }
  std::string name() const override { return inner_->name() + "+" + act_scheme_name(scheme_); }
  StatsRequest stats_request() const override { return inner_->stats_request(); }
  bool collects_itself() const override { return inner_->collects_itself(); }
  Status process_block(BlockContext& ctx) override;
  BlockProcessor& inner() { return *inner_; }
  const ActQuantRecord& record() const { return record_; }
  // Re-applies a finished block's activation quantization to `site` (weight `name`) when a run
  // resumes: wraps the linear with `scale` (static schemes; 0 for dynamic) and records it.
  Status restore(Model& model, const LinearSite& site, const std::string& name, float scale);

 private:
  ActScheme scheme_;
  std::string observer_;
  std::unique_ptr<BlockProcessor> inner_;
  ActQuantRecord record_;
};

}  // namespace qforge
