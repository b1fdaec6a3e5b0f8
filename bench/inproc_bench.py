"""The interpreter's share of a proxied request, without sockets or the kernel.

One non-stream OpenAI request and its upstream answer go through a real App,
ClientProtocol and UpstreamProtocol wired to fake transports (as in
tests/unit/inproc.py), on a kept-alive upstream connection. Prints the number of
Python-level calls of fastgate's own code for one request (sys.setprofile) and
the time per request over a loop (perf_counter) and its CPU time (process_time:
steadier on a shared machine). The model has a price, as in bench/run.py, so the
request is priced and charged. Usage records are batched by 1000 and handed to
the metrics fold as the real sink does (`NOFOLD=1`: without it). `--root` points at another
checkout (e.g. a `git worktree` of an older commit) to compare before and after:

    python bench/inproc_bench.py --stub            # the bench stub's answer
    python bench/inproc_bench.py --stream          # its 22-event stream, passed through
    python bench/inproc_bench.py --opcodes         # bytecode instructions per function
    python bench/inproc_bench.py --c-calls         # calls into C functions, by function
    python bench/inproc_bench.py --stub --managed-key   # quota, expiry, allow-list, budget
    python bench/inproc_bench.py --stub --azure    # an Azure channel (its deployment path)
    python bench/inproc_bench.py --anthropic-stream   # an OpenAI stream from an Anthropic channel
    python bench/inproc_bench.py --gemini-stream      # ... from a Gemini channel
    python bench/inproc_bench.py --anthropic-passthrough  # Anthropic in and out (general path)
    git worktree add /tmp/before fb96c31 && python bench/inproc_bench.py --root /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
KEY = "fg-budget-000000000000000000000000000000000000000"
CONFIG = f"""
[[channels]]
name = "up"
type = "openai"
base_url = "http://upstream.test:9"
api_key = "sk-up"
models = ["m1"]

[[tokens]]
name = "fast"
key = "{KEY}"

[[prices]]
model = "m1"
input = 0.15
output = 0.6
"""
BODY = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'


def post(path: bytes, body: bytes) -> bytes:
    """A client's request to the gateway: the bench key, a JSON body."""
    return (
        b"POST %b HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %b\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (path, KEY.encode(), len(body), body)
    )


REQUEST = post(b"/v1/chat/completions", BODY)
ANSWER = (
    b'{"id":"c1","object":"chat.completion","model":"m1","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nx-request-id: up-1\r\n\r\n%b" % (len(ANSWER), ANSWER)
)
# `--stub`: the answer bench/run.py's stub gives (nginx's headers, the 649-byte body).
STUB_ANSWER = (BENCH / "stub/chat_completion.json").read_bytes()
STUB_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 15:18:39 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n"
    b"Last-Modified: Sat, 05 Dec 2026 14:23:11 GMT\r\nConnection: keep-alive\r\n"
    b"Accept-Ranges: bytes\r\n\r\n%b" % (len(STUB_ANSWER), STUB_ANSWER)
)
# `--convert-stream`: an Anthropic client's stream request to the OpenAI channel,
# answered with the stub's 23-event SSE stream (the general path and the converter).
CONVERT_BODY = (
    b'{"model":"m1","max_tokens":128,"messages":[{"role":"user","content":"hi"}],"stream":true}'
)
CONVERT_REQUEST = post(b"/v1/messages", CONVERT_BODY)
# `--stream`: an OpenAI stream request passed through (the fast path), answered
# with the same stream (the gateway asks for usage, so the usage chunk is cut).
STREAM_BODY = b'{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true}'
STREAM_REQUEST = post(b"/v1/chat/completions", STREAM_BODY)
SSE_ANSWER = (BENCH / "stub/chat_stream.sse").read_bytes()
SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 15:18:39 GMT\r\n"
    b"Content-Type: text/event-stream\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n%b" % (len(SSE_ANSWER), SSE_ANSWER)
)

# `--anthropic-stream`: an OpenAI stream request to an Anthropic channel (the other
# conversion direction), answered with an Anthropic stream of the same 20 words.
_WORDS = [
    "Streaming", " keeps", " the", " answer", " flowing", " one", " token",
    " at", " a", " time", " so", " the", " client", " sees", " text", " as",
    " soon", " as", " it", " exists",
]  # fmt: skip


def _a_event(name: bytes, data: str) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (name, data.encode())


A_SSE_ANSWER = (
    _a_event(
        b"message_start",
        '{"type":"message_start","message":{"id":"msg_bench0000000000000001","type":'
        '"message","role":"assistant","model":"claude-bench","content":[],"stop_reason":'
        'null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}',
    )
    + _a_event(
        b"content_block_start",
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    )
    + _a_event(b"ping", '{"type": "ping"}')
    + b"".join(
        _a_event(
            b"content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            + f'"{w}"'
            + "}}",
        )
        for w in _WORDS
    )
    + _a_event(b"content_block_stop", '{"type":"content_block_stop","index":0}')
    + _a_event(
        b"message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        '"usage":{"output_tokens":20}}',
    )
    + _a_event(b"message_stop", '{"type":"message_stop"}')
)
# `--gemini-stream`: the same request to a Gemini channel, answered with Google's
# alt=sse stream of the same 20 words (CRLF between events).
G_SSE_ANSWER = b"".join(
    b'data: {"candidates":[{"content":{"parts":[{"text":"%s"}],"role":"model"},%s'
    b'"index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":%d,'
    b'"totalTokenCount":%d},"modelVersion":"gemini-bench","responseId":"bench01"}\r\n\r\n'
    % (w.encode(), b'"finishReason":"STOP",' if i == len(_WORDS) - 1 else b"", i + 1, i + 10)
    for i, w in enumerate(_WORDS)
)
G_SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n%b" % (len(G_SSE_ANSWER), G_SSE_ANSWER)
)
A_SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n%b" % (len(A_SSE_ANSWER), A_SSE_ANSWER)
)


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int = 0, low: int = 0) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class Sink:
    """Batches of 1000 like WriterSink; `observe` (the metrics fold, which App
    sets where the checkout has it) is called with each batch, as WriterSink's
    ship does. NOFOLD=1 in the environment leaves the fold out."""

    def __init__(self) -> None:
        self.buf: list[Any] = []
        self.observe: Any = None

    def append(self, record: Any) -> None:
        buf = self.buf
        buf.append(record)
        if len(buf) >= 1000:
            if self.observe is not None:
                self.observe(buf)
            self.buf = []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument(
        "--limits", action="store_true", help="the key has rpm and tpm (memory backend)"
    )
    ap.add_argument(
        "--managed-key",
        action="store_true",
        help="the key has a quota, an expiry, a models allow-list and a daily budget",
    )
    ap.add_argument(
        "--azure",
        action="store_true",
        help="the channel is Azure (api_version 2024-10-21: the deployment path)",
    )
    ap.add_argument("--profile", action="store_true", help="pyinstrument the loop")
    ap.add_argument(
        "--stub", action="store_true", help="the bench stub's answer (nginx headers, 649 B)"
    )
    ap.add_argument(
        "--convert-stream",
        action="store_true",
        help="an Anthropic stream request to the OpenAI channel (the general path)",
    )
    ap.add_argument(
        "--opcodes",
        action="store_true",
        help="print the bytecode instructions per Python function of one request",
    )
    ap.add_argument(
        "--c-calls",
        action="store_true",
        help="print the calls into C functions of one request, by function",
    )
    ap.add_argument(
        "--stream",
        action="store_true",
        help="an OpenAI stream request passed through (the stub's 22-event stream)",
    )
    ap.add_argument(
        "--anthropic-stream",
        action="store_true",
        help="an OpenAI stream request to an Anthropic channel (its 26-event stream)",
    )
    ap.add_argument(
        "--anthropic-passthrough",
        action="store_true",
        help="an Anthropic stream request to an Anthropic channel (no conversion)",
    )
    ap.add_argument(
        "--gemini-stream",
        action="store_true",
        help="an OpenAI stream request to a Gemini channel (its 20-event alt=sse stream)",
    )
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    import uvloop

    import fastgate
    from fastgate.app import App
    from fastgate.config import parse_config
    from fastgate.http.client import ClientProtocol
    from fastgate.snapshot import build_snapshot

    pkg = os.path.dirname(fastgate.__file__)
    token = f'key = "{KEY}"\n'  # what follows goes into the bench key's [[tokens]] entry
    extra = "rpm = 100000000\ntpm = 100000000000\n" if args.limits else ""
    if args.managed_key:  # what a managed deployment's keys carry
        extra += (
            'quota_usd = 1000000\nexpires_at = "2099-01-01T00:00:00Z"\nmodels = ["m1"]\n'
            'budget_usd = 1000000\nbudget_period = "day"\n'
        )
    text = CONFIG.replace(token, token + extra, 1)
    if args.azure:
        text = text.replace('type = "openai"\n', 'type = "azure"\napi_version = "2024-10-21"\n', 1)
    if args.anthropic_stream or args.anthropic_passthrough:
        text = text.replace('type = "openai"\n', 'type = "anthropic"\n', 1)
    if args.gemini_stream:
        text = text.replace('type = "openai"\n', 'type = "gemini"\n', 1)
    cfg = parse_config(tomllib.loads(text))
    loop = uvloop.new_event_loop()
    app = App(cfg, build_snapshot(cfg), loop, Sink())
    if os.environ.get("NOFOLD"):
        app.sink.observe = None
    ups: list[tuple[Any, Transport]] = []

    async def create_connection(factory: Any, host: str, port: int, **kw: Any) -> Any:
        proto, tr = factory(), Transport()
        proto.connection_made(tr)
        ups.append((proto, tr))
        return tr, proto

    loop.create_connection = create_connection  # type: ignore[method-assign]
    # The loop's turn, as uvloop takes it after the I/O callbacks of a poll: the
    # callbacks scheduled with call_soon run (the write queue's flush, http/cork.py).
    ready: list[Any] = []

    def call_soon(callback: Any, *args: Any, context: Any = None) -> None:
        ready.append((callback, args))

    def turn() -> None:
        while ready:
            callback, args = ready.pop(0)
            callback(*args)

    request, response, answer = REQUEST, RESPONSE, ANSWER
    if args.stub:
        response, answer = STUB_RESPONSE, STUB_ANSWER
    if args.stream:  # the stream's last event, chunk-framed to the client
        request, response = STREAM_REQUEST, SSE_RESPONSE
        answer = b"data: [DONE]\n\n\r\n0\r\n\r\n"
    if args.convert_stream:  # the converted stream's last event
        request, response = CONVERT_REQUEST, SSE_RESPONSE
        answer = b'event: message_stop\ndata: {"type":"message_stop"}\n\n\r\n0\r\n\r\n'
    if args.anthropic_passthrough:  # passed on with the upstream's Content-Length
        request, response = CONVERT_REQUEST, A_SSE_RESPONSE
        answer = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    if args.anthropic_stream or args.gemini_stream:
        request = STREAM_REQUEST
        response = A_SSE_RESPONSE if args.anthropic_stream else G_SSE_RESPONSE
        answer = b"data: [DONE]\n\n\r\n0\r\n\r\n"

    def answered() -> bool:
        tail = ctr.written[-1]
        return tail.endswith(answer) or (b"".join(ctr.written).endswith(answer))

    client, ctr = ClientProtocol(app), Transport()
    client.connection_made(ctr)
    client.data_received(request)  # the first request opens the upstream connection
    for _ in range(5):
        loop.run_until_complete(asyncio.sleep(0))
    up, utr = ups[0]
    loop.call_soon = call_soon  # type: ignore[method-assign]  # from here the bench turns
    up.data_received(response)
    turn()
    assert b"".join(ctr.written).startswith(b"HTTP/1.1 200 OK") and answered(), ctr.written

    calls = 0

    def prof(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(pkg):
            calls += 1

    sys.setprofile(prof)
    client.data_received(request)
    turn()
    up.data_received(response)
    turn()
    sys.setprofile(None)
    assert len(ups) == 1 and answered()
    if args.opcodes:
        print_opcodes(
            lambda: (client.data_received(request), turn(), up.data_received(response), turn())
        )
    if args.c_calls:
        print_c_calls(
            lambda: (client.data_received(request), turn(), up.data_received(response), turn())
        )

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0001)
        profiler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(args.n):
        client.data_received(request)
        turn()
        up.data_received(response)
        turn()
        # what was written goes at once, as a socket's transport lets it go: kept
        # for 1000 requests, a 6 KB stream answer grew and trimmed the heap (page
        # faults: ~12 % of `--stream`'s time, which the real server never pays)
        ctr.written.clear()
        utr.written.clear()
    dt = (time.perf_counter() - t0) / args.n
    cpu = (time.process_time() - c0) / args.n
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"fastgate at {pkg}")
    print(f"Python-level calls of fastgate per request: {calls}")
    print(f"in-process CPU per request (no sockets): {cpu * 1e6:.2f} us")
    print(f"in-process time per request (no sockets): {dt * 1e6:.2f} us")
    return 0


def print_opcodes(one_request: Any) -> None:
    """Bytecode instructions executed per Python function for one request
    (sys.settrace with per-opcode events): where the interpreter loop's time goes."""
    counts: dict[tuple[str, str], int] = {}

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            key = (code.co_filename.rsplit("/", 2)[-1], code.co_qualname)
            counts[key] = counts.get(key, 0) + 1
        return trace

    sys.settrace(trace)
    one_request()
    sys.settrace(None)
    total = sum(counts.values())
    print(f"bytecode instructions per request: {total}")
    for (path, name), n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{n:6d} {100 * n / total:5.1f}%  {path}:{name}")


def print_c_calls(one_request: Any) -> None:
    """Calls from Python code into C functions and methods for one request
    (sys.setprofile's c_call events), by function: each pays the C API's call
    and argument handling (~0.5-2k instructions) whatever it then does."""
    counts: dict[str, int] = {}

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call":
            owner = getattr(arg, "__self__", None)
            kind = type(owner).__name__ if owner is not None else ""
            key = f"{kind}.{arg.__name__}" if kind and kind != "module" else arg.__qualname__
            counts[key] = counts.get(key, 0) + 1

    sys.setprofile(prof)
    one_request()
    sys.setprofile(None)
    print(f"calls into C functions per request: {sum(counts.values())}")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{n:6d}  {name}")


if __name__ == "__main__":
    raise SystemExit(main())
