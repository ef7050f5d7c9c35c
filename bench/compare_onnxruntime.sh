#!/usr/bin/env bash
# compare_onnxruntime.sh: kernattn's exact softmax attention against ONNX Runtime's CPU attention.
#
# Usage: bench/compare_onnxruntime.sh BENCH_BINARY [ORT_DIR]
#   BENCH_BINARY  a kernattn_bench built in Release (e.g. build/bench/bench/kernattn_bench)
#   ORT_DIR       the folder that holds node_modules/onnxruntime-node (default: $KERNATTN_ORT_DIR,
#                 else the current directory); install it there with
#                 `npm install --ignore-scripts onnxruntime-node`
#   ROUNDS=5      rounds (environment); MIN_TIME=0.5 seconds per measurement (environment)
#
# Same problem on both sides: one head, batch 1, Nq = Nk = N in {1024, 4096}, d = dv = 64, float,
# on one and on two threads (kernattn's BM_Softmax and BM_Softmax_2T, ONNX Runtime's
# com.microsoft MultiHeadAttention through bench/onnxruntime_attention.mjs). The two alternate
# for ROUNDS rounds, so that a change in the machine's load hits both; the table gives the
# medians over rounds of the milliseconds per call, ORT time / kernattn time (> 1: kernattn is
# faster), and kernattn's GFLOP/s as a fraction of threads x BM_PeakFma<float> (one core's FMA
# peak, when the binary has it). Use an otherwise idle machine.
#
# ONNX Runtime is an optional peer, never needed to build or test kernattn: without node or
# onnxruntime-node this prints one "skipped: ..." line and exits 0.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 BENCH_BINARY [ORT_DIR]" >&2
  exit 2
fi
bench=$1
ort_dir=${2:-${KERNATTN_ORT_DIR:-$PWD}}
rounds=${ROUNDS:-5}
min_time=${MIN_TIME:-0.5}
ort_script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/onnxruntime_attention.mjs"

if [[ ! -x $bench ]]; then
  echo "not an executable: $bench" >&2
  exit 2
fi
if ! command -v node > /dev/null; then
  echo "skipped: node is not installed (ONNX Runtime is driven through onnxruntime-node)"
  exit 0
fi
if ! ort_version=$(node "$ort_script" --ort "$ort_dir" --version 2>&1); then
  echo "skipped: ${ort_version//$'\n'/ }"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for ((r = 1; r <= rounds; ++r)); do
  echo "round $r/$rounds: kernattn_bench, then ONNX Runtime $ort_version" >&2
  if ! "$bench" --benchmark_filter='^BM_Softmax(_2T)?/(1024|4096)(/real_time)?$|^BM_PeakFma<float>' \
      --benchmark_min_time="$min_time" --benchmark_format=json \
      > "$work/kernattn_$r.json" 2> "$work/kernattn_$r.err"; then
    cat "$work/kernattn_$r.err" >&2
    exit 1
  fi
  if ! node "$ort_script" --ort "$ort_dir" --n 1024,4096 --threads 1,2 --repetitions 1 \
      --min-time "$min_time" --json "$work/ort_$r.json" > "$work/ort_$r.txt"; then
    cat "$work/ort_$r.txt" >&2
    exit 1
  fi
done

node - "$work" "$rounds" "$bench" "$ort_version" << 'EOF'
const fs = require('node:fs');
const [, , work, rounds, bench, ortVersion] = process.argv;
const toMs = { ns: 1e-6, us: 1e-3, ms: 1, s: 1e3 };
const median = (v) => {
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const kernattn = new Map(), ort = new Map(), peak = [];  // key `${threads}/${n}` -> ms per round
const push = (map, key, value) => map.set(key, [...(map.get(key) ?? []), value]);
for (let r = 1; r <= Number(rounds); ++r) {
  for (const b of JSON.parse(fs.readFileSync(`${work}/kernattn_${r}.json`, 'utf8')).benchmarks) {
    if (b.run_type === 'aggregate') continue;
    const name = b.name.replace(/\/real_time$/, '');  // BM_Softmax/1024/real_time or BM_Softmax/1024
    const softmax = name.match(/^BM_Softmax(_2T)?\/(\d+)$/);
    if (softmax) push(kernattn, `${softmax[1] ? 2 : 1}/${softmax[2]}`, b.real_time * toMs[b.time_unit]);
    else if (name === 'BM_PeakFma<float>') peak.push(b.GFLOPS);
  }
  for (const x of JSON.parse(fs.readFileSync(`${work}/ort_${r}.json`, 'utf8')).results)
    push(ort, `${x.threads}/${x.n}`, x.median_ms);
}
const peakGflops = median(peak);
const fmt = (x, digits, width) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a').padStart(width);
console.log(`kernattn_bench: ${bench}\nONNX Runtime ${ortVersion} (onnxruntime-node, CPU)`);
console.log(`medians over ${rounds} interleaved rounds; d = dv = 64, one head, batch 1`);
console.log(`BM_PeakFma<float>: ${Number.isFinite(peakGflops) ? peakGflops.toFixed(1) + ' GFLOPS (one core)' : 'not in this binary'}`);
console.log(' threads      N  kernattn ms     ORT ms  ORT/kernattn  kernattn GFLOP/s  of peak');
for (const threads of [1, 2]) {
  for (const n of [1024, 4096]) {
    const key = `${threads}/${n}`;
    const k = median(kernattn.get(key) ?? []), o = median(ort.get(key) ?? []);
    const gflops = 4 * n * n * 64 / (k * 1e-3) * 1e-9;
    const fraction = 100 * gflops / (threads * peakGflops);
    console.log(`${String(threads).padStart(8)} ${String(n).padStart(6)} ${fmt(k, 3, 12)} ${fmt(o, 3, 10)} ` +
                `${fmt(o / k, 2, 13)} ${fmt(gflops, 1, 17)} ${(Number.isFinite(fraction) ? fraction.toFixed(1) + '%' : 'n/a').padStart(8)}`);
  }
}
EOF
