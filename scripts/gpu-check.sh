#!/usr/bin/env bash
# The one prepared device run (see docs/cuda.md). Carry gpu-bundle/ (scripts/build-gpu-bundle.sh):
#   run(command="bash scripts/gpu-check.sh", carry=["gpu-bundle"], timeout_s=540)
# Steps: 1 kernel tests vs CPU references, 2 CPU/CUDA greedy agreement, 3 copy bandwidth and batch-1 MBU
# on llama-3.1-8b (dummy weights), 4 tok/s at concurrency 1/8/32/64 on llama-3.2-1b (in 512 / out 256),
# 5 HF transformers generate as the peer, 6 JSON to $OUT and a table last. Budget: under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${BUNDLE:-gpu-bundle}
OUT=${OUT:-$(mktemp -d)}
W=$(mktemp -d)
NV=$(python3 -c 'import nvidia;print(list(nvidia.__path__)[0])' 2>/dev/null || true)
[ -n "$NV" ] && export LD_LIBRARY_PATH=$NV/cu13/lib:${LD_LIBRARY_PATH:-}
for b in sconce kernels-cuda-test; do gunzip -c "$B/bin/$b.gz" > "$W/$b" && chmod +x "$W/$b"; done
S="$W/sconce"
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "gpu: $GPU; commit $(cat "$B/COMMIT" 2>/dev/null)" | tee "$OUT/device.txt"
declare -A R
step() { echo "== $1 ($(date +%T))"; }

step "1 kernel tests"
timeout 120 "$W/kernels-cuda-test" --test-threads=1 --nocapture > "$OUT/kernel-tests.txt" 2>&1
R[kernel_tests]=$([ $? = 0 ] && echo pass || echo FAIL)
grep -E "rel err|test result|panicked" "$OUT/kernel-tests.txt" | tail -40
timeout 60 "$W/kernels-cuda-test" copy_bandwidth --ignored --nocapture 2>&1 | grep -o '{.*}' > "$OUT/copy.json"
R[copy_gbs]=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["copy_bandwidth_gbs"])' "$OUT/copy.json" 2>/dev/null || echo NA)

step "2 greedy agreement CPU vs CUDA (tiny fixture, f32)"
P="The capital of France is"
gen() { timeout 60 "$S" generate --model "$B/fixtures/tiny-llama" --prompt "$P" --max-tokens 32 --ignore-eos --device "$1" --dtype "$2" 2>/dev/null; }
gen cpu f32 > "$OUT/tiny-cpu.txt"; gen cuda f32 > "$OUT/tiny-cuda-f32.txt"; gen cuda bf16 > "$OUT/tiny-cuda-bf16.txt"
R[tiny_f32_agree]=$(cmp -s "$OUT/tiny-cpu.txt" "$OUT/tiny-cuda-f32.txt" && [ -s "$OUT/tiny-cpu.txt" ] && echo pass || echo FAIL)
R[tiny_bf16_agree]=$(cmp -s "$OUT/tiny-cpu.txt" "$OUT/tiny-cuda-bf16.txt" && echo same || echo differs)
if [ -n "${SMOLLM2_GGUF:-}" ] && [ -f "$SMOLLM2_GGUF" ]; then
  for d in cpu cuda; do timeout 90 "$S" generate --model "$SMOLLM2_GGUF" --prompt "$P" --max-tokens 32 --device $d --dtype f32 > "$OUT/smollm2-$d.txt" 2>/dev/null; done
  R[smollm2_agree]=$(cmp -s "$OUT/smollm2-cpu.txt" "$OUT/smollm2-cuda.txt" && echo pass || echo FAIL)
else
  R[smollm2_agree]="skipped (GGUF over the carry limit)"
fi

bench() { # model config concurrency prompts in out kv_bytes
  timeout 150 "$S" bench --model "$1" --load-format dummy --model-config "$B/configs/$1.json" --device cuda \
    --concurrency "$2" --num-prompts "$3" --input-len "$4" --output-len "$5" --kv-cache-memory "$6" --json 2>"$OUT/bench-$1.err"
}
step "3 batch-1 decode MBU, llama-3.1-8b dummy bf16"
bench llama-3.1-8b 1 2 512 256 $((8 << 30)) | tee "$OUT/mbu-8b.json"
step "4 throughput, llama-3.2-1b dummy bf16, in 512 / out 256"
bench llama-3.2-1b 1,8,32,64 64 512 256 $((16 << 30)) | tee "$OUT/sconce-1b.jsonl"
step "5 HF transformers generate peer"
timeout 200 python3 scripts/hf_peer.py "$B/configs/llama-3.2-1b.json" --concurrency 1,8,32,64 2>"$OUT/hf.err" | tee "$OUT/hf-1b.jsonl"

step "6 summary"
for k in "${!R[@]}"; do echo "$k=${R[$k]}"; done > "$OUT/checks.txt"
python3 - "$OUT" "$B/configs/llama-3.1-8b.json" "$GPU" <<'PY'
import json, sys, os
out, cfg_path, gpu = sys.argv[1], sys.argv[2], sys.argv[3]
def lines(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
checks = dict(l.strip().split("=", 1) for l in open(os.path.join(out, "checks.txt")) if "=" in l)
c = json.load(open(cfg_path))
h, i, L, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
d = c.get("head_dim", h // c["num_attention_heads"]); kv = c["num_key_value_heads"]
params = L * (h * d * (c["num_attention_heads"] * 2 + kv * 2) + 3 * h * i) + v * h * (1 if c.get("tie_word_embeddings") else 2)
peak = 4.8e12 if "H200" in gpu else 3.35e12
mbu = {}
for r in lines("mbu-8b.json"):
    tok_s = 1000.0 / r["tpot_p50_ms"] if r.get("tpot_p50_ms") else 0.0
    mbu = {"decode_tok_s": round(tok_s, 1), "weight_bytes": 2 * params, "mbu_vs_spec": round(tok_s * 2 * params / peak, 3),
           "spec_bw": peak}
    try:
        mbu["mbu_vs_copy"] = round(tok_s * 2 * params / (float(checks.get("copy_gbs")) * 1e9), 3)
    except (TypeError, ValueError):
        pass
ours = {r["concurrency"]: r for r in lines("sconce-1b.jsonl")}
hf = {r["concurrency"]: r for r in lines("hf-1b.jsonl")}
summary = {"gpu": gpu, "checks": checks, "mbu_8b": mbu, "sconce_1b": list(ours.values()), "hf_1b": list(hf.values())}
json.dump(summary, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
print("| check | result |\n|---|---|")
for k, val in sorted(checks.items()):
    print(f"| {k} | {val} |")
if mbu:
    print(f"| batch-1 decode llama-3.1-8b | {mbu['decode_tok_s']} tok/s, MBU {mbu['mbu_vs_spec']:.1%} of spec |")
print("\n| concurrency | sconce tok/s | HF generate tok/s | ratio |\n|---|---|---|---|")
for conc in sorted(set(ours) | set(hf)):
    a, b = ours.get(conc, {}).get("output_tok_s"), hf.get(conc, {}).get("output_tok_s")
    ratio = f"{a / b:.1f}x" if a and b else "NA"
    print(f"| {conc} | {a} | {b} | {ratio} |")
PY
