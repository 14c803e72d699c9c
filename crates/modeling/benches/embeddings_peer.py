"""The peer of `cargo bench -p sconce-modeling --bench embeddings`: sentence-transformers on the
CPU with the same all-MiniLM-L6-v2 files, 256 inputs of 32 and of 256 tokens, batches of 1 and 32.

Run: python embeddings_peer.py ~/.cache/sconce/models/all-minilm-l6-v2/model
(needs `pip install torch sentence-transformers`; the folder is the one Sconce unpacks).
"""

import sys
import time

import torch
from sentence_transformers import SentenceTransformer

INPUTS = 256


def text_of(tokens: int, seed: int) -> str:
    """Words that are one word piece each, so the input is `tokens` long with [CLS] and [SEP]."""
    words = ["river", "table", "green", "music", "stone", "light", "water", "house"]
    return " ".join(words[(seed * 7 + i) % len(words)] for i in range(tokens - 2))


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    model = SentenceTransformer(sys.argv[1], device="cpu")
    model.max_seq_length = 256
    print(f"| tokens per input | batch | embeddings/s | seconds for {INPUTS} |  (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print("|---|---|---|---|")
    for length in (32, 256):
        texts = [text_of(length, seed) for seed in range(INPUTS)]
        assert len(model.tokenizer(texts[0])["input_ids"]) == length
        model.encode(texts[:4], batch_size=4)
        for batch in (1, 32):
            started = time.perf_counter()
            model.encode(texts, batch_size=batch, normalize_embeddings=True)
            seconds = time.perf_counter() - started
            print(f"| {length} | {batch} | {INPUTS / seconds:.1f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
