"""A tool round trip through the official openai SDK: the model calls get_weather (forced),
the tool's result goes back with its tool_call_id, and the model answers in text. Once whole
and once streamed (the streamed call is rebuilt from its deltas). Prints a JSON summary."""
import json
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
model = sys.argv[2]
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}]
question = [{"role": "user", "content": "What is the weather in Paris?"}]


def streamed_call(**kwargs):
    """The stream's tool call rebuilt from its deltas, and its finish reason."""
    call, finish = {"id": None, "name": "", "arguments": ""}, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0, "parallel_tool_calls=False: one call"
                call["id"] = delta.id or call["id"]
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return call, finish


def answer_after(call_id, name, arguments, stream):
    messages = question + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"city": "Paris", "celsius": 21})},
    ]
    kwargs = dict(model=model, messages=messages, tools=tools, tool_choice="none", max_tokens=40, temperature=0)
    if not stream:
        reply = client.chat.completions.create(**kwargs)
        return reply.choices[0].message.content, reply.choices[0].finish_reason
    text, finish = "", None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


ask = dict(model=model, messages=question, tools=tools, tool_choice="required", parallel_tool_calls=False,
           max_tokens=80, temperature=0)
whole = client.chat.completions.create(**ask)
message = whole.choices[0].message
assert len(message.tool_calls) == 1, message
call = message.tool_calls[0]
assert whole.choices[0].finish_reason == "tool_calls", whole
assert call.type == "function" and call.id.startswith("call_"), call
stream_call, stream_finish = streamed_call(**ask)
assert stream_finish == "tool_calls", stream_finish
answer, finish = answer_after(call.id, call.function.name, call.function.arguments, stream=False)
stream_answer, stream_answer_finish = answer_after(stream_call["id"], stream_call["name"], stream_call["arguments"], stream=True)
print(json.dumps({
    "call": {"name": call.function.name, "arguments": call.function.arguments},
    "stream_call": {"name": stream_call["name"], "arguments": stream_call["arguments"]},
    "answer": answer, "finish": finish,
    "stream_answer": stream_answer, "stream_finish": stream_answer_finish,
}))
