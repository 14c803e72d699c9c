"""embeddings.create through the official openai SDK: float, base64 and the SDK's own
default (it asks for base64 and decodes it) must give the same vectors. Prints them as JSON."""
import base64
import json
import struct
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
texts = ["The cat sat on the mat.", "ok"]
model = sys.argv[2]

floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
raw = client.embeddings.create(model=model, input=texts, encoding_format="base64")
default = client.embeddings.create(model=model, input=texts)


def unpack(text):
    data = base64.b64decode(text)
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def f32(values):
    """JSON floats are the shortest decimals of f32 values; read them back as f32."""
    return [struct.unpack("<f", struct.pack("<f", value))[0] for value in values]


want = [f32(item.embedding) for item in floats.data]
assert [item.index for item in floats.data] == [0, 1]
assert [unpack(item.embedding) for item in raw.data] == want, "base64 differs from float"
assert [f32(item.embedding) for item in default.data] == want, "the SDK default differs from float"
assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
print(json.dumps({"vectors": want, "prompt_tokens": floats.usage.prompt_tokens}))
