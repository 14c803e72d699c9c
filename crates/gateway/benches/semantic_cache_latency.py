"""The semantic cache's added latency over HTTP: two `sconce serve` processes with the gateway on,
the semantic cache off in one and on in the other (all-MiniLM-L6-v2 served beside the chat model),
requests alternated between them. A miss: a new ~100-token question each time, `max_tokens: 1`,
sent with `cache-control: no-store` (looked up, never stored: word salads of one vocabulary are
near each other, and would hit). Then hits: one stored question asked again.

Run (BENCHMARKS.md has the two configs):
    python semantic_cache_latency.py http://127.0.0.1:8101 http://127.0.0.1:8102 [rounds]
"""

import json
import random
import statistics
import sys
import time
import urllib.request

WORDS = ("river table green music stone light water house garden winter paper window orange "
         "market silver forest engine bridge candle morning").split()


def question(rng: random.Random) -> str:
    return "Please explain " + " ".join(rng.choice(WORDS) for _ in range(95)) + "?"


def ask(base: str, text: str, cache_control: str = "") -> tuple[float, str]:
    body = json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0})
    headers = {"content-type": "application/json"}
    if cache_control:
        headers["cache-control"] = cache_control
    request = urllib.request.Request(f"{base}/v1/chat/completions", body.encode(), headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        response.read()
        cache = response.headers.get("x-sconce-cache", "")
    return (time.perf_counter() - started) * 1000, cache


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    off, on = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    rng = random.Random(7)
    for base in (off, on):
        ask(base, question(rng), "no-store")
    times = {"cache off": [], "cache on, miss": [], "cache on, hit": []}
    for _ in range(rounds):
        text = question(rng)
        times["cache off"].append(ask(off, text)[0])
        took, cache = ask(on, text, "no-store")
        assert cache == "miss", cache
        times["cache on, miss"].append(took)
    stored = question(rng)
    ask(on, stored)  # a miss, stored
    for _ in range(rounds):
        took, cache = ask(on, stored)
        assert cache == "semantic-hit", cache
        times["cache on, hit"].append(took)
    print("| server | requests | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {statistics.median(values):.2f} | {p99(values):.2f} |")


if __name__ == "__main__":
    main()
