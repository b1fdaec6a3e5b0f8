"""What the mock answers, whichever protocol it then writes it in.

A request is read into a `Spec` (`spec_from_openai`, `spec_from_completions`,
`spec_from_responses`, `spec_from_anthropic`): the last user message's text, the
tools and the tool choice, the output format, `n`, stop sequences and the token
limit. `answer` turns a spec into one `Choice` per `n`:

- A tool call when the choice is forced (a named tool, `required`, Anthropic
  `any`/`tool`), or when it is `auto` and the last user message names a tool
  ("get_weather" or "get weather") or asks for one ("use a tool", "call the
  function"), unless the conversation already ends with a tool result. Several
  named tools are all called unless parallel calls are off. Arguments are a
  value of the tool's JSON schema (`mock_schema.sample`).
- Otherwise text: a few sentences picked by a hash of the last user message
  (the same request always gets the same words; choice i of `n` its own), or,
  for `json_object` / `json_schema` output, JSON text (a schema's sample value).
- The text is cut before the first stop sequence (finish "stop"), then to the
  token limit (finish "length"; tool-call arguments too).

A token is one whitespace-separated word with the space before it (`pieces`):
what one stream chunk carries and what usage counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastgate.providers.mock_schema import sample
from fastgate.vocab.usage import estimate_tokens

__all__ = [
    "Call",
    "Choice",
    "MockRefusal",
    "Spec",
    "answer",
    "pieces",
    "prose",
    "spec_from_anthropic",
    "spec_from_completions",
    "spec_from_openai",
    "spec_from_responses",
]

MAX_N = 128
_PIECE = re.compile(r"\s*\S+|\s+")
_ASKS_FOR_TOOL = re.compile(
    r"\b(use|call|invoke|run|try)\b[^.?!]{0,40}?\b(tool|tools|function|functions)\b", re.I
)


class MockRefusal(Exception):
    """A request a real upstream would refuse with a 400 (the message says why)."""


@dataclass(slots=True)
class Tool:
    name: str
    schema: Any


@dataclass(slots=True)
class Spec:
    seed: str = ""  # the last user message's text
    after_tool: str = ""  # the tool whose result ends the conversation ("" if none)
    tools: list[Tool] = field(default_factory=list)
    choice: str = "auto"  # "auto" | "none" | "required" | "named"
    forced: str = ""  # the tool a "named" choice names
    parallel: bool = True
    fmt: str = "text"  # "text" | "json_object" | "json_schema"
    schema: Any = None
    n: int = 1
    stops: tuple[str, ...] = ()
    limit: int = 0  # max output tokens, 0 = none
    prompt_tokens: int = 0


@dataclass(slots=True)
class Call:
    id: str
    name: str
    args: str  # JSON text (cut short when the token limit cut it)
    pieces: list[str]
    value: Any  # the arguments as a value ({} when cut)


@dataclass(slots=True)
class Choice:
    text: str | None  # None: tool calls instead
    pieces: list[str]
    calls: list[Call]
    finish: str  # "stop" | "length" | "tool_calls"
    stop_sequence: str | None
    tokens: int


def pieces(text: str) -> list[str]:
    """The tokens of `text`: each word with the whitespace before it."""
    return _PIECE.findall(text)


# -- prose ------------------------------------------------------------------------------

_OPENERS = (
    "Thanks for the question.",
    "Good question.",
    "Here is a short answer.",
    "Happy to help with that.",
    "Sure, here is what I can say.",
    "That is a fair question.",
)
_BODY = (
    "This {reply|answer} comes from the built-in mock, so it {costs nothing|is free} "
    "and needs no {network|API key}.",
    "The gateway {routed|sent} your request to a local channel, {counted|priced} its "
    "tokens and {logged|recorded} the result.",
    "In a real deployment, a provider such as {OpenAI|Anthropic|Google} would write "
    "this {text|reply}, and the usage would be {priced|billed} the same way.",
    "The same request always gets the same {answer|words}, which makes "
    "{tests|demos|benchmarks} easy to repeat.",
    "{Streaming|Tool calling|Structured output}, stop sequences and token limits "
    "{work here|behave here} as they would with a real model.",
    "If you point a channel at a real {provider|upstream}, {no client code|nothing in "
    "your client} has to change.",
    "Each word counts as one token, so the {usage|accounting} is easy to check.",
    "Your key, your {quota|budget} and your rate limits {apply|still apply}, just as "
    "they would with any other channel.",
)
_CLOSERS = (
    "I hope that helps.",
    "Let me know if you need anything else.",
    "Ask again and you will get the same answer.",
    "Feel free to try another question.",
    "That is all for now.",
)
_SLOT = re.compile(r"\{([^}]*)\}")


class _Dice:
    """Deterministic choices from a hash of the seed."""

    __slots__ = ("buf", "pos", "seed")

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.buf = hashlib.sha256(seed).digest()
        self.pos = 0

    def roll(self, n: int) -> int:
        if self.pos >= len(self.buf):
            self.buf = hashlib.sha256(self.buf + self.seed).digest()
            self.pos = 0
        b = self.buf[self.pos]
        self.pos += 1
        return b % n

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[self.roll(len(options))]

    def fill(self, template: str) -> str:
        return _SLOT.sub(lambda m: self.pick(m.group(1).split("|")), template)


def prose(seed: str, variant: int = 0, after_tool: str = "") -> str:
    """A few plain sentences, the same for the same seed and variant."""
    dice = _Dice(seed.encode("utf-8", "replace") + b"\x00%d" % variant)
    if after_tool:
        first = f"The {after_tool} tool has answered, so here is a summary."
    else:
        first = dice.pick(_OPENERS)
    body = list(_BODY)
    a = body.pop(dice.roll(len(body)))
    b = body[dice.roll(len(body))]
    return " ".join((first, dice.fill(a), dice.fill(b), dice.pick(_CLOSERS)))


# -- answers ----------------------------------------------------------------------------


def _mentions(text: str, name: str) -> bool:
    for form in {name, name.replace("_", " ").replace("-", " ")}:
        if form and re.search(r"(?<!\w)" + re.escape(form) + r"(?!\w)", text, re.I):
            return True
    return False


def _tools_to_call(spec: Spec) -> list[Tool]:
    tools = spec.tools
    if not tools or spec.choice == "none":
        return []
    if spec.choice == "named":
        return [t for t in tools if t.name == spec.forced][:1]
    named = [t for t in tools if _mentions(spec.seed, t.name)]
    if spec.choice == "required":
        picks = named or tools[:1]
    elif spec.after_tool:
        return []
    else:
        picks = named or (tools[:1] if _ASKS_FOR_TOOL.search(spec.seed) else [])
    return picks if spec.parallel else picks[:1]


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    at, which = len(text), None
    for s in stops:
        i = text.find(s)
        if 0 <= i < at:
            at, which = i, s
    return text[:at], which


def _content(spec: Spec, variant: int) -> str:
    if spec.fmt == "json_schema":
        value = sample(spec.schema) if isinstance(spec.schema, dict) else {}
        return json.dumps(value, ensure_ascii=False)
    text = prose(spec.seed, variant, spec.after_tool)
    if spec.fmt == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    return text


def answer(spec: Spec, rid: str, call_prefix: str) -> list[Choice]:
    """One choice per `spec.n`; tool-call ids are `call_prefix` + a hash of `rid`."""
    out = []
    for i in range(spec.n):
        tools = _tools_to_call(spec)
        if tools:
            out.append(_calls(spec, tools, rid, call_prefix, i))
            continue
        text, stop = _cut_at_stop(_content(spec, i), spec.stops)
        toks = pieces(text)
        finish = "stop"
        if spec.limit and len(toks) > spec.limit:
            toks = toks[: spec.limit]
            text, stop, finish = "".join(toks), None, "length"
        out.append(Choice(text, toks, [], finish, stop, len(toks)))
    return out


def _calls(spec: Spec, tools: list[Tool], rid: str, prefix: str, i: int) -> Choice:
    calls: list[Call] = []
    finish = "tool_calls"
    budget = spec.limit or -1
    for k, tool in enumerate(tools):
        value = sample(tool.schema) if isinstance(tool.schema, dict) else {}
        args = json.dumps(value, ensure_ascii=False)
        toks = pieces(args)
        if 0 <= budget < len(toks):
            toks, value, finish = toks[:budget], {}, "length"
            args = "".join(toks)
        digest = hashlib.sha1(f"{rid}.{i}.{k}".encode()).hexdigest()[:24]
        calls.append(Call(prefix + digest, tool.name, args, toks, value))
        if finish == "length":
            break
        if budget >= 0:
            budget -= len(toks)
    return Choice(None, [], calls, finish, None, sum(len(c.pieces) for c in calls))


# -- reading requests ---------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict)
            and p.get("type") in ("text", "input_text")
            and isinstance(p.get("text"), str)
        )
    return ""


def _openai_turn(msgs: list[Any]) -> tuple[str, str]:
    """(last user text, name of the tool answered after it or "")."""
    after = ""
    result_ids: list[Any] = []
    for m in reversed(msgs):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "user":
            return _text_of(m.get("content")), after
        if role == "tool":
            result_ids.append(m.get("tool_call_id"))
        elif role == "assistant" and result_ids and not after:
            for call in m.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and call.get("id") in result_ids:
                    after = str(fn.get("name") or "")
                    break
    return "", after


def _stops(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise MockRefusal(f"{where} must be a string or a list of strings")


def _limit(obj: dict[str, Any], *keys: str) -> int:
    for key in keys:
        v = obj.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MockRefusal(f"{key} must be a positive integer")
        return v
    return 0


def _n(obj: dict[str, Any]) -> int:
    n = obj.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise MockRefusal(f"n must be an integer from 1 to {MAX_N}")
    return n


def _openai_tool_choice(spec: Spec, tc: Any) -> None:
    if tc is None:
        return
    if tc in ("auto", "none", "required"):
        spec.choice = tc
        return
    if isinstance(tc, dict) and tc.get("type") == "allowed_tools":
        allowed = tc.get("allowed_tools") if isinstance(tc.get("allowed_tools"), dict) else {}
        names = {
            (t.get("function") or {}).get("name") or t.get("name")
            for t in allowed.get("tools") or ()
            if isinstance(t, dict)
        }
        spec.tools = [t for t in spec.tools if t.name in names]
        spec.choice = "required" if allowed.get("mode") == "required" else "auto"
        return
    if isinstance(tc, dict):
        fn = tc.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tc.get("name")
        if isinstance(name, str):
            _force(spec, name)
            return
    raise MockRefusal("tool_choice must be auto, none, required or a named function")


def _force(spec: Spec, name: str) -> None:
    if not any(t.name == name for t in spec.tools):
        raise MockRefusal(f"tool_choice names {name!r}, which is not in tools")
    spec.choice, spec.forced = "named", name


def _require_tools(spec: Spec) -> None:
    if spec.choice in ("required", "named") and not spec.tools:
        raise MockRefusal("tool_choice requires tools")


def spec_from_openai(obj: dict[str, Any]) -> Spec:
    """A chat completions request."""
    msgs = obj.get("messages")
    msgs = msgs if isinstance(msgs, list) else []
    spec = Spec(n=_n(obj), limit=_limit(obj, "max_completion_tokens", "max_tokens"))
    spec.seed, spec.after_tool = _openai_turn(msgs)
    raw_tools = obj.get("tools") if isinstance(obj.get("tools"), list) else []
    for t in raw_tools:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            spec.tools.append(Tool(fn["name"], fn.get("parameters")))
    _openai_tool_choice(spec, obj.get("tool_choice"))
    _require_tools(spec)
    spec.parallel = obj.get("parallel_tool_calls") is not False
    rf = obj.get("response_format")
    if isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
        spec.fmt = rf["type"]
        js = rf.get("json_schema")
        spec.schema = js.get("schema") if isinstance(js, dict) else None
    spec.stops = _stops(obj.get("stop"), "stop")
    spec.prompt_tokens = estimate_tokens(msgs) + (estimate_tokens(raw_tools) if raw_tools else 0)
    return spec


def spec_from_completions(obj: dict[str, Any]) -> Spec:
    """A legacy completions request (text only)."""
    prompt = obj.get("prompt", "")
    seed = prompt if isinstance(prompt, str) else ""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        seed = prompt[0]
    spec = Spec(seed=seed, n=_n(obj), limit=_limit(obj, "max_tokens"))
    spec.stops = _stops(obj.get("stop"), "stop")
    spec.prompt_tokens = estimate_tokens(prompt)
    return spec


def spec_from_responses(obj: dict[str, Any]) -> Spec:
    """A Responses API request: text, function tools, `text.format`."""
    inp = obj.get("input", "")
    if isinstance(inp, list):
        msgs = [
            {"role": "tool", "tool_call_id": i.get("call_id")}
            if isinstance(i, dict) and i.get("type") == "function_call_output"
            else {
                "role": "assistant",
                "tool_calls": [{"id": i.get("call_id"), "function": {"name": i.get("name")}}],
            }
            if isinstance(i, dict) and i.get("type") == "function_call"
            else i
            for i in inp
        ]
        seed, after = _openai_turn(msgs)
    else:
        seed, after = (inp if isinstance(inp, str) else ""), ""
    spec = Spec(seed=seed, after_tool=after, limit=_limit(obj, "max_output_tokens"))
    raw_tools = obj.get("tools") if isinstance(obj.get("tools"), list) else []
    for t in raw_tools:
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str):
            spec.tools.append(Tool(t["name"], t.get("parameters")))
    _openai_tool_choice(spec, obj.get("tool_choice"))
    _require_tools(spec)
    spec.parallel = obj.get("parallel_tool_calls") is not False
    text = obj.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        spec.fmt, spec.schema = fmt["type"], fmt.get("schema")
    spec.prompt_tokens = (
        estimate_tokens(inp)
        + estimate_tokens(obj.get("instructions") or "")
        + (estimate_tokens(raw_tools) if raw_tools else 0)
    )
    return spec


def _anthropic_turn(msgs: list[Any]) -> tuple[str, str]:
    after = ""
    result_ids: list[Any] = []
    for m in reversed(msgs):
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        if m.get("role") == "user":
            result_ids += [
                b.get("tool_use_id")
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_result"
            ]
            text = _text_of(content)
            if text or not result_ids:
                return text, after
        elif m.get("role") == "assistant" and result_ids and not after:
            for b in blocks:
                if (
                    isinstance(b, dict)
                    and b.get("type") == "tool_use"
                    and b.get("id") in result_ids
                ):
                    after = str(b.get("name") or "")
                    break
    return "", after


def spec_from_anthropic(obj: dict[str, Any]) -> Spec:
    """An Anthropic Messages request."""
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        raise MockRefusal("messages: Field required")
    if obj.get("max_tokens") is None:
        raise MockRefusal("max_tokens: Field required")
    spec = Spec(limit=_limit(obj, "max_tokens"))
    spec.seed, spec.after_tool = _anthropic_turn(msgs)
    raw_tools = obj.get("tools") if isinstance(obj.get("tools"), list) else []
    for t in raw_tools:
        if isinstance(t, dict) and isinstance(t.get("name"), str) and "input_schema" in t:
            spec.tools.append(Tool(t["name"], t["input_schema"]))
    tc = obj.get("tool_choice")
    if isinstance(tc, dict):
        kind = tc.get("type")
        if kind == "any":
            spec.choice = "required"
        elif kind == "tool" and isinstance(tc.get("name"), str):
            _force(spec, tc["name"])
        elif kind in ("auto", "none"):
            spec.choice = kind
        else:
            raise MockRefusal("tool_choice.type must be auto, any, tool or none")
        spec.parallel = tc.get("disable_parallel_tool_use") is not True
    elif tc is not None:
        raise MockRefusal("tool_choice must be an object")
    _require_tools(spec)
    oc = obj.get("output_config")
    fmt = oc.get("format") if isinstance(oc, dict) else None
    if fmt is None:
        fmt = obj.get("output_format")  # the structured-outputs beta's spelling
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec.fmt, spec.schema = "json_schema", fmt.get("schema")
    spec.stops = _stops(obj.get("stop_sequences"), "stop_sequences")
    system = obj.get("system") or ""
    spec.prompt_tokens = (
        estimate_tokens(msgs)
        + estimate_tokens(system)
        + (estimate_tokens(raw_tools) if raw_tools else 0)
    )
    return spec
