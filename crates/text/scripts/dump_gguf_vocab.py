"""Dumps a GGUF file's tokenizer metadata as JSON in `GgufVocab`'s shape.

Usage: python3 dump_gguf_vocab.py MODEL.gguf OUT.json
Then: SCONCE_TEST_GGUF_VOCAB_JSON=OUT.json cargo test -p sconce-text --test gguf_vocab_dump
Needs the `gguf` Python package.
"""

import json
import sys

from gguf import GGUFReader


def main(gguf_path, out_path):
    fields = GGUFReader(gguf_path).fields

    def get(key, default=None):
        field = fields.get("tokenizer.ggml." + key)
        return default if field is None else field.contents()

    vocab = {
        "model": get("model"),
        "pre": get("pre"),
        "tokens": get("tokens", []),
        "merges": get("merges", []),
        "token_types": get("token_type", []),
        "bos_id": get("bos_token_id"),
        "eos_id": get("eos_token_id"),
        "unk_id": get("unknown_token_id"),
        "add_bos": bool(get("add_bos_token", False)),
    }
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(vocab, out, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
