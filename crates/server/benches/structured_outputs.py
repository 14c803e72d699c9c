"""Structured-output overhead over HTTP against a running `sconce serve` (SmolLM2 on CPU).

For concurrency 1 and 16, rounds alternate (interleaved) between no constraint and a nested
10-field JSON schema, each request streaming up to 128 tokens. Reports per-request TPOT and
TTFT medians for: unconstrained, a schema seen before (cached grammar), and a new schema per
request (cache miss: the grammar compiles on the request's path). The server's
`sconce:constraint_*` histograms give mask time per token and per step.

    python3 crates/server/benches/structured_outputs.py http://127.0.0.1:8000 [rounds]
"""
import http.client
import json
import statistics
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
URL = urllib.parse.urlparse(BASE)


def schema(tag=""):
    text = {"type": "string", "maxLength": 60}
    person = {"type": "object", "additionalProperties": False, "required": ["first", "last", "email"],
              "properties": {"first": text, "last": text, "email": text}}
    address = {"type": "object", "additionalProperties": False, "required": ["street", "city", "zip"],
               "properties": {"street": text, "city": text, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}
    properties = {"title": text, "summary": text, "author": person, "address": address,
                  "pages": {"type": "integer", "minimum": 1, "maximum": 5000}, "rating": {"type": "number"},
                  "tags": {"type": "array", "items": text, "maxItems": 4}, "published": {"type": "boolean"},
                  "language": {"enum": ["en", "fr", "de", "es"]}, "isbn": text}
    if tag:
        properties["note_" + tag] = {"type": "string", "maxLength": 8}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def body(constraint, i):
    request = {"messages": [{"role": "user", "content": f"Describe book number {i} as JSON with a long summary."}],
               "max_tokens": 128, "temperature": 0.7, "seed": i, "stream": True}
    if constraint == "cached":
        request["response_format"] = {"type": "json_schema", "json_schema": {"name": "book", "schema": schema()}}
    elif constraint == "new":
        tag = f"{time.time_ns()}_{i}"
        request["response_format"] = {"type": "json_schema", "json_schema": {"name": "book", "schema": schema(tag)}}
    return json.dumps(request)


def one(constraint, i):
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body(constraint, i), {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    first, tokens = None, 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk["choices"]:
            if choice["delta"].get("content"):
                tokens += 1
                first = first or time.perf_counter()
    end = time.perf_counter()
    conn.close()
    ttft = (first or end) - start
    tpot = (end - first) / max(tokens - 1, 1) if first else float("nan")
    return ttft, tpot


def metrics():
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("sconce:constraint_") and "_bucket" in line:
            name, value = line.rsplit(" ", 1)
            series, le = name.split("_bucket")[0], name.split('le="')[1].rstrip('"}')
            out.setdefault(series, []).append((float("inf") if le == "+Inf" else float(le), float(value)))
    return out


def quantile(before, after, series, q):
    buckets = [(le, count - dict(before.get(series, [])).get(le, 0)) for le, count in after.get(series, [])]
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return float("nan")
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


def run(concurrency):
    results = {"none": [], "cached": [], "new": []}
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: one("cached", i), range(concurrency)))  # warm-up, fills the cache
        for round_ in range(ROUNDS):
            for kind, constraint in enumerate(["none", "cached", "new"]):
                # Distinct prompts for each kind, so none of them rides another's prefix cache.
                first = 1000 + round_ * 100 + kind * 30
                ids = range(first, first + concurrency)
                results[constraint] += list(pool.map(lambda i: one(constraint, i), ids))
    base_ttft = statistics.median(t for t, _ in results["none"])
    base_tpot = statistics.median(p for _, p in results["none"])
    print(f"concurrency {concurrency}: unconstrained TTFT p50 {base_ttft*1000:.1f} ms, TPOT p50 {base_tpot*1000:.2f} ms")
    for constraint in ["cached", "new"]:
        ttft = statistics.median(t for t, _ in results[constraint])
        tpot = statistics.median(p for _, p in results[constraint])
        print(f"  {constraint:6} schema: TTFT p50 {ttft*1000:.1f} ms ({ttft/base_ttft:.3f}x), "
              f"TPOT p50 {tpot*1000:.2f} ms ({tpot/base_tpot:.3f}x)")


before = metrics()
for concurrency in [1, 16]:
    run(concurrency)
after = metrics()
for series in ["sconce:constraint_mask_seconds", "sconce:constraint_step_mask_seconds", "sconce:constraint_compile_seconds"]:
    p50, p99 = quantile(before, after, series, 0.5), quantile(before, after, series, 0.99)
    print(f"{series}: p50 <= {p50*1e6:.0f} us, p99 <= {p99*1e6:.0f} us (bucket bounds)")
