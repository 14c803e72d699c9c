"""HF transformers `generate` peer for gpu-check.sh: the same config, random weights, the same workload.

usage: python3 hf_peer.py CONFIG_JSON --input-len 512 --output-len 256 --concurrency 1,8,32,64
Prints one JSON line per concurrency level (output tok/s).
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--concurrency", default="1,8,32,64")
    args = ap.parse_args()
    with open(args.config) as f:
        raw = json.load(f)
    config = AutoConfig.for_model(raw.pop("model_type", "llama"), **raw)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.eval()
    vocab = config.vocab_size
    for c in [int(x) for x in args.concurrency.split(",")]:
        ids = torch.randint(0, vocab, (c, args.input_len), device="cuda")
        gen = dict(max_new_tokens=args.output_len, min_new_tokens=args.output_len, do_sample=False,
                   pad_token_id=0, eos_token_id=None)
        with torch.inference_mode():
            model.generate(ids[:, :16], max_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **gen)
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        tokens = (out.shape[1] - args.input_len) * c
        print(json.dumps({"engine": "hf-transformers", "concurrency": c, "output_tokens": tokens,
                          "seconds": round(elapsed, 3), "output_tok_s": round(tokens / elapsed, 2),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
