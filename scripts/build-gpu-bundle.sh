#!/usr/bin/env bash
# Builds everything the device run needs into gpu-bundle/ (git-ignored), to carry with
#   run(command="bash scripts/gpu-check.sh", carry=["gpu-bundle"])
# Contents: `sconce` (release, --features cuda) and the CUDA kernel test binary, stripped and gzipped
# (the embedded PTX compresses well), model configs as config.json files, and the tiny fixture.
# The SmolLM2 GGUF (about 98 MB) does not fit the 64 MiB carry and is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SCONCE_CUDA_STUB=1 source scripts/cuda-env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
bundle=${BUNDLE:-$root/gpu-bundle}
t0=$(date +%s)
cargo build --release --features cuda -p sconce-server --bin sconce
t1=$(date +%s)
# Same package set and features as the server build, so candle-kernels is not built a second time.
test_bin=$(cargo test --release -p sconce-server -p sconce-kernels --features sconce-server/cuda,sconce-kernels/cuda \
  --test cuda --no-run --message-format json |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
t2=$(date +%s)
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/configs" "$bundle/fixtures"
strip -o "$bundle/bin/sconce" "$CARGO_TARGET_DIR/release/sconce"
strip -o "$bundle/bin/kernels-cuda-test" "$test_bin"
ls -l "$bundle/bin"
gzip -9 "$bundle/bin/sconce" "$bundle/bin/kernels-cuda-test"
cp -r tests/fixtures/tiny-llama "$bundle/fixtures/"
python3 - "$bundle/configs" models/*.toml <<'PY'
import json, sys, tomllib
out = sys.argv[1]
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        entry = tomllib.load(f)
    if "config" in entry:
        with open(f"{out}/{entry['name']}.json", "w") as f:
            json.dump(entry["config"], f, indent=1)
PY
git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || true
git status --porcelain | head -50 > "$bundle/DIRTY" 2>/dev/null || true
size=$(du -sb "$bundle" | cut -f1)
echo "build sconce: $((t1 - t0)) s; kernel tests: $((t2 - t1)) s; bundle: $((size / 1048576)) MiB ($size bytes)"
ls -l "$bundle/bin" "$bundle/configs"
[ "$size" -lt $((60 << 20)) ] || { echo "bundle over 60 MiB: the carry limit is 64 MiB" >&2; exit 1; }
