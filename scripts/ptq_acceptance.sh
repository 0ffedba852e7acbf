#!/usr/bin/env bash
# Issue 5's acceptance table (docs/BENCHMARKS.md, "Calibrated quantization"): quantizes
# ref-llama-25m (and ref-llama-18m for the GGUF rows) with every method, evaluates each result
# against the f32 model and prints one markdown row per run.
#
#   scripts/ptq_acceptance.sh [ROW ...]        (no ROW: every row, in the order below)
#
# Environment:
#   QF             qforge binary (default build/qforge)
#   SHARED         fixtures (default ../shared)
#   OUT            work directory (default /tmp/ptq-acceptance): $OUT/<row>.{log,eval.json}
#   PRINT_ONLY=1   print the table of the rows already measured, run nothing
#   CALIB_WINDOWS  calibration windows (default 128, the protocol's; ctx is 512)
#   EVAL_WINDOWS   heldout windows at ctx 512 (default 0 = all 410, the protocol's)
#   REF_LOGITS_DIR when $REF_LOGITS_DIR/<model dir name>.ref.safetensors exists (saved by
#                  `qforge eval MODEL --text heldout.txt --ctx 512 --save-logits F --logits-dtype f32`),
#                  KLD and top-1 use it (--ref-logits) instead of running the f32 model alongside
# A row whose eval JSON already exists is not run again (delete it to re-run).
# Protocol: calibration.txt, CALIB_WINDOWS x 512 tokens, seed 0; eval heldout.txt ctx 512, KLD and
# top-1 against the f32 model run alongside (--ref). Quantization time = wall time of the
# quantize command (/usr/bin/time), as is its peak RSS.
set -euo pipefail
QF=${QF:-build/qforge}
SHARED=${SHARED:-../shared}
OUT=${OUT:-/tmp/ptq-acceptance}
CALIB_WINDOWS=${CALIB_WINDOWS:-128}
EVAL_WINDOWS=${EVAL_WINDOWS:-0}
M=$SHARED/models/ref-llama-25m
S=$SHARED/models/ref-llama-18m
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$OUT"
CAL="--calib-windows $CALIB_WINDOWS --calib-ctx 512 --seed 0"

ALL_ROWS="rtn4 rtn3 gptq4 gptq3 gptqao4 gptqao3 awq4 awq3 awqg4 awqg3 best4 best3 gptqaoclip4 gptqaoclip3 gptqaocliprefit4 gptqaocliprefit3
w8a8dyn w8a8static sqstatic
g18-Q4_0 g18-Q4_0-im g18-Q4_0-gptq g18-Q4_K_M g18-Q4_K_M-im g18-Q4_K_M-gptq g18-Q3_K_M g18-Q3_K_M-im g18-Q3_K_M-gptq"

# row -> "model|label|scheme|quantize arguments (output appended)|output file"
row_spec() {
  local r=$1
  case $r in
    rtn4) echo "$M|RTN|int4-g128-asym|quantize $M --scheme int4-g128-asym|safetensors" ;;
    rtn3) echo "$M|RTN|int3-g128-asym|quantize $M --scheme int3-g128-asym|safetensors" ;;
    gptq4) echo "$M|GPTQ|int4-g128-asym|quantize $M --method gptq --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptq3) echo "$M|GPTQ|int3-g128-asym|quantize $M --method gptq --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqao4) echo "$M|GPTQ + act-order|int4-g128-asym|quantize $M --method gptq --act-order --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqao3) echo "$M|GPTQ + act-order|int3-g128-asym|quantize $M --method gptq --act-order --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    awq4) echo "$M|AWQ (+RTN)|int4-g128-asym|quantize $M --method awq --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    awq3) echo "$M|AWQ (+RTN)|int3-g128-asym|quantize $M --method awq --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    awqg4) echo "$M|AWQ + GPTQ|int4-g128-asym|quantize $M --method awq+gptq --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    awqg3) echo "$M|AWQ + GPTQ|int3-g128-asym|quantize $M --method awq+gptq --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    best4) echo "$M|AWQ + GPTQ + act-order + MSE clip|int4-g128-asym|quantize $M --method awq+gptq --act-order --gptq-clip --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    best3) echo "$M|AWQ + GPTQ + act-order + MSE clip|int3-g128-asym|quantize $M --method awq+gptq --act-order --gptq-clip --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqaoclip4) echo "$M|GPTQ + act-order + MSE clip|int4-g128-asym|quantize $M --method gptq --act-order --gptq-clip --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqaoclip3) echo "$M|GPTQ + act-order + MSE clip|int3-g128-asym|quantize $M --method gptq --act-order --gptq-clip --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqaocliprefit4) echo "$M|GPTQ + act-order + MSE clip + scale refit|int4-g128-asym|quantize $M --method gptq --act-order --gptq-clip --gptq-refit --scheme int4-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqaocliprefit3) echo "$M|GPTQ + act-order + MSE clip + scale refit|int3-g128-asym|quantize $M --method gptq --act-order --gptq-clip --gptq-refit --scheme int3-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqaocliprefit[34]-d*)  # gptqaocliprefit4-d0.001 = --damp 0.001
      local bits=${r:15:1} damp=${r#*-d}
      echo "$M|GPTQ + act-order + MSE clip + scale refit, damp $damp|int$bits-g128-asym|quantize $M --method gptq --act-order --gptq-clip --gptq-refit --damp $damp --scheme int$bits-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    gptqaoclip[34]-d*)  # dampening variants: gptqaoclip4-d0.001 = --damp 0.001
      local bits=${r:10:1} damp=${r#*-d}
      echo "$M|GPTQ + act-order + MSE clip, damp $damp|int$bits-g128-asym|quantize $M --method gptq --act-order --gptq-clip --damp $damp --scheme int$bits-g128-asym --calib $M/calibration.txt $CAL|safetensors" ;;
    w8a8dyn) echo "$M|W8A8, int8 per-token dynamic|int8-ch-sym|quantize $M --method rtn --scheme int8-ch-sym --act-scheme int8-token-dyn --calib $M/calibration.txt $CAL|safetensors" ;;
    w8a8static) echo "$M|W8A8, int8 per-tensor static (minmax)|int8-ch-sym|quantize $M --method rtn --scheme int8-ch-sym --act-scheme int8-tensor-static --calib $M/calibration.txt $CAL|safetensors" ;;
    sqstatic) echo "$M|SmoothQuant α=0.5 + W8A8 static|int8-ch-sym|quantize $M --method smoothquant --alpha 0.5 --scheme int8-ch-sym --act-scheme int8-tensor-static --calib $M/calibration.txt $CAL|safetensors" ;;
    sqstatic-a*)  # migration strength variants: sqstatic-a0.75 = --alpha 0.75
      local alpha=${r#sqstatic-a}
      echo "$M|SmoothQuant α=$alpha + W8A8 static|int8-ch-sym|quantize $M --method smoothquant --alpha $alpha --scheme int8-ch-sym --act-scheme int8-tensor-static --calib $M/calibration.txt $CAL|safetensors" ;;
    g18-*)
      local t=${r#g18-} extra="" label
      case $t in
        *-im) t=${t%-im}; extra="--imatrix $OUT/imatrix18.gguf"; label="$t, imatrix" ;;
        *-gptq) t=${t%-gptq}; extra="--method gptq --calib $S/calibration.txt $CAL"; label="$t, GPTQ" ;;
        *) label="$t, no imatrix" ;;
      esac
      echo "$S|GGUF $label|$t|quantize $S --format gguf --type $t $extra|gguf" ;;
    *) echo "unknown row $r" >&2; return 1 ;;
  esac
}

# Quantizes and evaluates one row (skipped when its eval JSON exists).
run_row() {
  local r=$1 spec model label scheme args ext
  spec=$(row_spec "$r")
  IFS='|' read -r model label scheme args ext <<<"$spec"
  local out=$OUT/$r.$ext json=$OUT/$r.eval.json log=$OUT/$r.log
  [[ -f $json ]] && return 0
  if [[ $r == g18-*-im && ! -f $OUT/imatrix18.gguf ]]; then
    /usr/bin/time -v "$QF" imatrix "$S" --calib "$S/calibration.txt" $CAL --out "$OUT/imatrix18.gguf" \
      >"$OUT/imatrix18.log" 2>&1
  fi
  # shellcheck disable=SC2086
  /usr/bin/time -v "$QF" $args --out "$out" >"$log" 2>&1 || { echo "$r: quantize failed, see $log" >&2; return 1; }
  local ref=(--ref "$model") cache=${REF_LOGITS_DIR:-/nonexistent}/$(basename "$model").ref.safetensors
  [[ -f $cache ]] && ref=(--ref-logits "$cache")
  "$QF" eval "$out" --config "$model" --text "$model/heldout.txt" --ctx 512 --max-windows "$EVAL_WINDOWS" \
    "${ref[@]}" --json "$json.tmp" >>"$log" 2>&1 || { echo "$r: eval failed, see $log" >&2; return 1; }
  mv "$json.tmp" "$json"
}

# One markdown row from a finished run's log and eval JSON.
print_row() {
  local r=$1 spec model label scheme args ext
  spec=$(row_spec "$r")
  IFS='|' read -r model label scheme args ext <<<"$spec"
  local json=$OUT/$r.eval.json log=$OUT/$r.log
  [[ -f $json ]] || return 0
  local wall rss bpw windows
  wall=$(grep 'Elapsed (wall clock)' "$log" | head -1 | awk '{print $NF}')
  rss=$(grep 'Maximum resident set size' "$log" | head -1 | awk '{print $NF}')
  # packed output: "(4.188 bits/weight)"; GGUF: "wrote ...: ..., N tensors, 4.5 bits/weight"
  bpw=$(grep -oE '[0-9.]+ bits/weight' "$log" | head -1 | awk '{print $1}')
  windows=$(grep -oE 'scored in [0-9]+ windows' "$log" | awk '{print $3}')
  jq -r --arg lbl "$label" --arg scheme "$scheme" --arg bpw "${bpw:-?}" --arg wall "$wall" --arg rss "$rss" \
     --arg model "$(basename "$model")" --arg ew "${windows:-?}" --arg cw "$CALIB_WINDOWS" \
    '"| \($model) | \($lbl) | \($scheme) | \($bpw) | \(.ppl*1000|round/1000) | \(((.ppl/.ref_ppl-1)*10000|round)/100)% | \(.kld_mean*10000|round/10000) | \((.top1_agreement*100|round)/100)% | \($wall) wall, \($rss) KiB | calib \($cw) x 512, eval \($ew) windows (ref ppl \(.ref_ppl*10000|round/10000)) |"' \
    "$json"
}

rows=${*:-$ALL_ROWS}
if [[ -z ${PRINT_ONLY:-} ]]; then
  for r in $rows; do run_row "$r" || true; done
fi
echo "| model | method | scheme | bits/weight | ppl | Δppl | mean KLD | top-1 | quantize wall time, peak RSS | protocol |"
echo "|---|---|---|---|---:|---:|---:|---:|---|---|"
for r in $rows; do print_row "$r"; done
