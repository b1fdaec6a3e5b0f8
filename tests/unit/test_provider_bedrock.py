"""Bedrock: event-stream framing, SigV4, Converse conversion, ConverseStream decoding.

Oracles: botocore (its event-stream decoder, its SigV4 signer driven through a real
`bedrock-runtime` client whose send is intercepted, its ConverseStream parser and its
request validator for the Converse input shape), the OpenAI and Anthropic SDKs for the
converted streams, and AWS's published SigV4 test vector. Expected values are derived
from the inputs, never from the code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import struct
import uuid
import zlib
from typing import Any
from unittest import mock

import botocore.session
import httpx2
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.validate import ParamValidator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgate.convert import ChainStream, OpenAIToAnthropicStream
from fastgate.convert.bedrock import (
    PLACEHOLDER_TOOL,
    converse_response_to_openai,
    finish_from_converse,
    openai_request_to_converse,
    usage_from_converse,
)
from fastgate.convert.bedrock_stream import ConverseStreamToOpenAI
from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.providers.bedrock import default_base_url, request_target
from fastgate.wire.eventstream import (
    MAX_MESSAGE_BYTES,
    EventStreamDecoder,
    Message,
    TypedHeader,
    encode_message,
)
from fastgate.wire.sigv4 import sign

SPLITS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# ==================================================================================
# event-stream framing
# ==================================================================================


def spec_message(headers: list[tuple[str, int, bytes]], payload: bytes) -> bytes:
    """A message framed by hand from the published layout (not with the encoder)."""
    hb = b"".join(bytes([len(n)]) + n.encode() + bytes([t]) + v for n, t, v in headers)
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + hb + payload
    return body + struct.pack(">I", zlib.crc32(body))


def test_decoder_reads_every_header_type_from_a_hand_built_message():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    raw = spec_message(
        [
            ("t", 0, b""),
            ("f", 1, b""),
            ("b", 2, struct.pack(">b", -7)),
            ("s", 3, struct.pack(">h", -300)),
            ("i", 4, struct.pack(">i", 70000)),
            ("l", 5, struct.pack(">q", -(2**40))),
            ("ba", 6, struct.pack(">H", 3) + b"\x00\xff\x10"),
            ("str", 7, struct.pack(">H", 6) + "héllo".encode()),
            ("ts", 8, struct.pack(">q", 1_700_000_000_123)),
            ("id", 9, u.bytes),
        ],
        b'{"x":1}',
    )
    (msg,) = EventStreamDecoder().feed(raw)
    assert msg.payload == b'{"x":1}'
    h = msg.headers
    assert h["t"] is True and h["f"] is False
    assert (h["b"], h["s"], h["i"], h["l"]) == (-7, -300, 70000, -(2**40))
    assert h["ba"] == b"\x00\xff\x10" and h["str"] == "héllo"
    assert h["ts"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC)
    assert h["id"] == u


def test_encoder_output_is_read_by_botocore():
    u = uuid.uuid4()
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    headers = {
        ":message-type": "event",
        ":event-type": "contentBlockDelta",
        "yes": True,
        "no": False,
        "byte": TypedHeader(2, -5),
        "short": TypedHeader(3, 1234),
        "int": 99,
        "long": 2**40,
        "bytes": b"\x01\x02",
        "ts": when,
        "uuid": u,
    }
    raw = encode_message(headers, b"payload!")
    buf = EventStreamBuffer()
    buf.add_data(raw)
    (m,) = list(buf)
    assert m.payload == b"payload!"
    h = m.headers
    assert h[":message-type"] == "event" and h[":event-type"] == "contentBlockDelta"
    assert h["yes"] is True and h["no"] is False
    assert (h["byte"], h["short"], h["int"], h["long"]) == (-5, 1234, 99, 2**40)
    assert h["bytes"] == b"\x01\x02"
    assert h["ts"] == int(when.timestamp() * 1000)
    assert h["uuid"] == u.bytes


header_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=40),
    st.text(max_size=40),
    st.uuids(),
    st.integers(-(2**31), 2**31).map(
        lambda ms: dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    ),
)
messages_st = st.lists(
    st.tuples(
        st.dictionaries(st.text(min_size=1, max_size=12), header_values, max_size=5),
        st.binary(max_size=300),
    ),
    min_size=1,
    max_size=6,
)


@SPLITS
@given(msgs=messages_st, data=st.data())
def test_decoder_random_messages_random_splits(msgs, data):
    raw = b"".join(encode_message(h, p) for h, p in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    dec = EventStreamDecoder()
    got: list[Message] = []
    for piece in _cut(raw, cuts):
        got.extend(dec.feed(piece))
    dec.close()
    assert [(m.headers, m.payload) for m in got] == [(h, p) for h, p in msgs]
    # botocore agrees on the framing (headers it types differently aside)
    buf = EventStreamBuffer()
    buf.add_data(raw)
    assert [m.payload for m in buf] == [p for _, p in msgs]


@settings(max_examples=15, deadline=None)
@given(msgs=messages_st)
def test_decoder_byte_by_byte(msgs):
    raw = b"".join(encode_message(h, p) for h, p in msgs)
    dec = EventStreamDecoder()
    got = []
    for i in range(len(raw)):
        got.extend(dec.feed(raw[i : i + 1]))
        # nothing is held beyond the message being received
        assert dec.buffered <= max(len(encode_message(h, p)) for h, p in msgs)
    assert [(m.headers, m.payload) for m in got] == [(h, p) for h, p in msgs]


def _flip(raw: bytes, i: int) -> bytes:
    return raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]


GOOD = encode_message({":message-type": "event", ":event-type": "x"}, b'{"a":1}')


@pytest.mark.parametrize("where", [0, 4, 8, 20, len(GOOD) - 6, len(GOOD) - 1])
def test_decoder_rejects_corrupted_bytes(where):
    with pytest.raises(UpstreamProtocolError, match=r"CRC|bounds"):
        EventStreamDecoder().feed(_flip(GOOD, where))


def test_decoder_refuses_absurd_length_from_the_prelude_alone():
    total = MAX_MESSAGE_BYTES + 1
    prelude = struct.pack(">II", total, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    dec = EventStreamDecoder()
    with pytest.raises(UpstreamProtocolError, match="out of bounds"):
        dec.feed(prelude)  # 12 bytes suffice: nothing waits for 16 MiB


@pytest.mark.parametrize(
    ("total", "hlen"),
    [(8, 0), (15, 0), (40, 30), (40, 200_000)],
)
def test_decoder_rejects_inconsistent_preludes(total, hlen):
    prelude = struct.pack(">II", total, hlen)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(UpstreamProtocolError, match="out of bounds"):
        EventStreamDecoder().feed(prelude + b"\x00" * 64)


@pytest.mark.parametrize(
    "headers",
    [
        [("x", 10, b"")],  # unknown type
        [("x", 7, struct.pack(">H", 50) + b"ab")],  # string longer than the headers
        [("x", 4, b"\x00\x01")],  # int32 cut short
        [("x", 7, struct.pack(">H", 1) + b"a"), ("x", 0, b"")],  # repeated name
        [("x", 7, struct.pack(">H", 2) + b"\xff\xfe")],  # not UTF-8
    ],
)
def test_decoder_rejects_bad_headers(headers):
    with pytest.raises(UpstreamProtocolError):
        EventStreamDecoder().feed(spec_message(headers, b""))


def test_decoder_rejects_zero_length_header_name():
    raw = spec_message([], b"")
    hb = b"\x00\x00"  # name length 0, type true
    total = 12 + len(hb) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    raw = prelude + hb
    raw += struct.pack(">I", zlib.crc32(raw))
    with pytest.raises(UpstreamProtocolError, match="name"):
        EventStreamDecoder().feed(raw)


def test_decoder_close_inside_a_message_raises_and_clean_close_does_not():
    dec = EventStreamDecoder()
    assert dec.feed(GOOD[:-3]) == []
    with pytest.raises(UpstreamProtocolError, match="inside a message"):
        dec.close()
    dec2 = EventStreamDecoder()
    assert len(dec2.feed(GOOD + GOOD)) == 2
    dec2.close()


def test_encoder_rejects_bad_names_and_types():
    with pytest.raises(ValueError):
        encode_message({"": 1})
    with pytest.raises(ValueError):
        encode_message({"x" * 256: 1})
    with pytest.raises(TypeError):
        encode_message({"x": 1.5})  # type: ignore[dict-item]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_decoder_fuzz_never_raises_anything_else(data):
    raw = bytearray(GOOD * 2)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    dec = EventStreamDecoder()
    try:
        dec.feed(bytes(raw))
        dec.close()
    except UpstreamProtocolError:
        pass


# ==================================================================================
# SigV4 against botocore
# ==================================================================================

FROZEN = dt.datetime(2024, 5, 6, 7, 8, 9)


def _botocore_request(
    model_id: str, region: str, token: str | None, stream: bool, body: dict[str, Any]
) -> Any:
    """The request botocore's own bedrock-runtime client would send (network cut off)."""
    captured: list[Any] = []

    def before_send(request, **_kw):
        captured.append(request)
        return AWSResponse(request.url, 500, {}, None)

    client = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name=region,
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 0}),
    )
    op = "ConverseStream" if stream else "Converse"
    client.meta.events.register(f"before-send.bedrock-runtime.{op}", before_send)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
        try:
            (client.converse_stream if stream else client.converse)(modelId=model_id, **body)
        except Exception:
            pass  # the fake 500: the request is what matters
    assert captured
    return captured[0]


BODY = {"messages": [{"role": "user", "content": [{"text": "hé, 1+1?"}]}]}


@pytest.mark.parametrize(
    ("model_id", "region", "token", "stream"),
    [
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "us-east-1", None, False),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "us-east-1", None, True),
        (
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "eu-west-3",
            "FQoGZXIvYXdzEJr//tok+en=",
            True,
        ),
        ("amazon.nova-pro-v1:0", "ap-northeast-1", "session-token", False),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "us-west-2",
            None,
            False,
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/ab12cd34ef56",
            "us-east-1",
            "tok",
            True,
        ),
        ("meta.llama3-70b-instruct-v1:0", "ca-central-1", None, False),
    ],
)
def test_sign_and_target_match_botocore_client(model_id, region, token, stream):
    req = _botocore_request(model_id, region, token, stream, BODY)
    host, path = request_target("", model_id, stream, region=region)
    assert f"https://{host}{path}" == req.url
    assert host == f"bedrock-runtime.{region}.amazonaws.com"
    body = req.body if isinstance(req.body, bytes) else req.body.encode()
    added = sign(
        "POST",
        req.url,
        {"content-type": "application/json"},
        body,
        region,
        access_key=AK,
        secret_key=SK,
        session_token=token,
        now=FROZEN,
    )
    want = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in req.headers.items()}
    assert added["authorization"] == want["authorization"]
    assert added["x-amz-date"] == want["x-amz-date"] == "20240506T070809Z"
    if token:
        assert added["x-amz-security-token"] == want["x-amz-security-token"] == token
    else:
        assert "x-amz-security-token" not in added and "x-amz-security-token" not in want
    # the ':' in the id is sent once encoded, and signed encoded twice (botocore's rule)
    if ":" in model_id:
        assert "%3A" in path and "%253A" not in path


def _sigv4_botocore(method, url, headers, body, region, service, token=None) -> dict[str, str]:
    req = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    auth = SigV4Auth(Credentials(AK, SK, token), service, region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
        auth.add_auth(req)
    return {k.lower(): v for k, v in req.headers.items()}


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        (
            "POST",
            "https://h.example.com/model/a%3Ab/converse",
            {"Content-Type": "application/json"},
            b"{}",
        ),
        ("GET", "https://h.example.com/", {}, b""),
        ("GET", "https://h.example.com/a/./b/../c//d", {}, b""),
        ("GET", "https://h.example.com/list?b=2&a=1&a=0&c=x%2Fy", {}, b""),
        ("POST", "http://localhost:8443/p/model/x/converse", {"X-Custom": "  a   b  "}, b"x" * 100),
        (
            "PUT",
            "https://h.example.com/p%20q/r~s",
            {"Accept": "*/*", "User-Agent": "u"},
            b"\x00\xff",
        ),
    ],
)
@pytest.mark.parametrize("token", [None, "T0K3N"])
def test_sign_matches_botocore_sigv4auth(method, url, headers, body, token):
    want = _sigv4_botocore(method, url, headers, body, "eu-central-1", "bedrock", token)
    got = sign(
        method,
        url,
        headers,
        body,
        "eu-central-1",
        access_key=AK,
        secret_key=SK,
        session_token=token,
        now=FROZEN,
    )
    assert got["authorization"] == want["authorization"]
    assert got["x-amz-date"] == want["x-amz-date"]
    assert "user-agent" not in got["authorization"]


def test_sign_published_aws_vector_get_vanilla():
    # AWS SigV4 test suite, "get-vanilla": GET / on example.amazonaws.com, 20150830T123600Z.
    got = sign(
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        "us-east-1",
        "service",
        access_key=AK,
        secret_key=SK,
        now=dt.datetime(2015, 8, 30, 12, 36, 0, tzinfo=dt.UTC),
    )
    assert got["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_sign_time_zones_and_secrets():
    args = ("POST", "https://h/x", {"content-type": "application/json"}, b"{}", "us-east-1")
    naive = sign(*args, access_key=AK, secret_key=SK, now=FROZEN)
    aware = sign(*args, access_key=AK, secret_key=SK, now=FROZEN.replace(tzinfo=dt.UTC))
    shifted = sign(
        *args,
        access_key=AK,
        secret_key=SK,
        now=FROZEN.replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=5))),
    )
    assert naive == aware == shifted
    other = sign(*args, access_key=AK, secret_key=SK + "x", now=FROZEN)
    assert other["authorization"] != naive["authorization"]
    live = sign(*args, access_key=AK, secret_key=SK)
    assert re.fullmatch(r"\d{8}T\d{6}Z", live["x-amz-date"])


def test_request_target_with_custom_base_url():
    assert default_base_url("eu-west-1") == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    host, path = request_target("http://127.0.0.1:9000/prefix/", "m:1/x", True)
    assert host == "127.0.0.1:9000"
    assert path == "/prefix/model/m%3A1%2Fx/converse-stream"
    host, path = request_target(
        "https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com", "m", False
    )
    assert host == "vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com"
    assert path == "/model/m/converse"
    with pytest.raises(ValueError):
        request_target("", "m", False)


# ==================================================================================
# requests: hub -> Converse
# ==================================================================================

_VALIDATOR = ParamValidator()
_SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")


def assert_valid_converse(body: dict[str, Any], stream: bool = False) -> None:
    """botocore's validator for the Converse input shape (types, unions, lengths)."""
    op = _SERVICE.operation_model("ConverseStream" if stream else "Converse")
    report = _VALIDATOR.validate({"modelId": "m", **body}, op.input_shape)
    assert not report.has_errors(), report.generate_report()


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()


def test_full_request_conversion():
    req = {
        "model": "claude",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "file",
                        "file": {
                            "filename": "report_v2.pdf",
                            "file_data": f"data:application/pdf;base64,{PDF}",
                        },
                    },
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "hidden",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "rain"}],
            },
            {"role": "user", "content": "Thanks, and Rome?"},
        ],
        "max_tokens": 500,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Get weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "required",
        "user": "u-1",
    }
    out = openai_request_to_converse(req)
    assert out == {
        "system": [{"text": "Be brief."}, {"text": "Use tools."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Weather here?"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                    {"document": {"format": "pdf", "name": "report-v2", "source": {"bytes": PDF}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "toolUse": {
                            "toolUseId": "call_1",
                            "name": "weather",
                            "input": {"city": "Oslo"},
                        }
                    },
                    {"toolUse": {"toolUseId": "call_2", "name": "weather", "input": {}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "12C"}]}},
                    {"toolResult": {"toolUseId": "call_2", "content": [{"text": "rain"}]}},
                    {"text": "Thanks, and Rome?"},
                ],
            },
        ],
        "inferenceConfig": {
            "maxTokens": 500,
            "temperature": 0.3,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "weather",
                        "description": "Get weather",
                        "inputSchema": {
                            "json": {"type": "object", "properties": {"city": {"type": "string"}}}
                        },
                    }
                }
            ],
            "toolChoice": {"any": {}},
        },
    }
    assert_valid_converse(out, stream=True)


@pytest.mark.parametrize(
    ("choice", "want"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "b"}}, {"tool": {"name": "b"}}),
    ],
)
def test_tool_choices(choice, want):
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("a", "b")
    ]
    out = openai_request_to_converse(
        {"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}
    )
    assert out["toolConfig"]["toolChoice"] == want
    assert [t["toolSpec"]["name"] for t in out["toolConfig"]["tools"]] == ["a", "b"]
    assert_valid_converse(out)


def test_allowed_tools_filters_and_none_withholds():
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b", "c")]
    out = openai_request_to_converse(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": tools,
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "c"}}],
                },
            },
        }
    )
    assert [t["toolSpec"]["name"] for t in out["toolConfig"]["tools"]] == ["c"]
    assert out["toolConfig"]["toolChoice"] == {"any": {}}
    none = openai_request_to_converse(
        {"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "none"}
    )
    assert "toolConfig" not in none


def test_tool_history_without_callable_tools_declares_the_placeholder():
    msgs = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": ""},
        {"role": "user", "content": "and now?"},
    ]
    for extra in (
        {},
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"},
    ):
        out = openai_request_to_converse({"messages": msgs, **extra})
        assert out["toolConfig"] == {"tools": [PLACEHOLDER_TOOL]}
        # an empty tool result is one empty text block (Converse refuses an empty list)
        assert out["messages"][2]["content"][0] == {
            "toolResult": {"toolUseId": "c1", "content": [{"text": ""}]}
        }
        assert_valid_converse(out)


def test_long_tool_ids_are_replaced_consistently():
    long_id = "call_x__sig_" + "A" * 200
    msgs = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": long_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": long_id, "content": "r"},
    ]
    out = openai_request_to_converse(
        {"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]}
    )
    use_id = out["messages"][1]["content"][0]["toolUse"]["toolUseId"]
    res_id = out["messages"][2]["content"][0]["toolResult"]["toolUseId"]
    assert use_id == res_id
    assert re.fullmatch(r"[a-zA-Z0-9_.:-]{1,64}", use_id)


def test_blank_text_is_dropped_and_consecutive_turns_merge():
    out = openai_request_to_converse(
        {
            "messages": [
                {"role": "system", "content": "   "},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": " "}, {"type": "text", "text": "a"}],
                },
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            ]
        }
    )
    assert "system" not in out
    assert out["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "no"}]},
    ]


def test_images_files_and_documents():
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "image_url", "image_url": "s3://bucket/pic.webp"},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}},
        {
            "type": "file",
            "file": {"filename": "notes.md", "file_data": "data:text/markdown;base64,IyBoaQ=="},
        },
        {"type": "file", "file": {"file_data": "data:image/gif;base64,R0lG"}},
    ]
    out = openai_request_to_converse({"messages": [{"role": "user", "content": parts}]})
    blocks = out["messages"][0]["content"]
    assert blocks[0] == {"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}}
    assert blocks[1] == {
        "image": {"format": "webp", "source": {"s3Location": {"uri": "s3://bucket/pic.webp"}}}
    }
    names = [b["document"]["name"] for b in blocks[2:5]]
    assert names[0] == "a" and names[1] != "a" and len(set(names)) == 3
    assert blocks[4]["document"]["format"] == "md"
    assert blocks[5] == {"image": {"format": "gif", "source": {"bytes": "R0lG"}}}
    assert_valid_converse(out)


def test_response_format_and_reasoning():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = openai_request_to_converse(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema},
            },
            "reasoning_effort": "medium",
            "max_completion_tokens": 4000,
        }
    )
    fmt = out["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema"
    assert json.loads(fmt["structure"]["jsonSchema"]["schema"]) == schema
    assert fmt["structure"]["jsonSchema"]["name"] == "out"
    # medium effort asks for 8192 thinking tokens; the budget must stay below max_tokens
    assert out["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 3999}
    }
    assert_valid_converse(out)
    assert "additionalModelRequestFields" not in openai_request_to_converse(
        {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "none"}
    )
    out = openai_request_to_converse({"messages": [{"role": "user", "content": "x"}]}, 2048)
    assert out["inferenceConfig"] == {"maxTokens": 2048}


def test_neutral_defaults_are_accepted():
    out = openai_request_to_converse(
        {
            "messages": [{"role": "user", "content": "x"}],
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "logit_bias": {},
            "parallel_tool_calls": True,
            "response_format": {"type": "text"},
            "metadata": {"a": "b"},
            "store": False,
            "temperature": None,
            "stop": "",
        }
    )
    assert out == {"messages": [{"role": "user", "content": [{"text": "x"}]}]}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"top_k": 5}, "top_k"),
        ({"seed": 1}, "seed"),
        ({"n": 2}, "n > 1"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"reasoning_effort": "medium"}, "max_tokens"),
        ({"reasoning_effort": "bogus", "max_tokens": 5000}, "bogus"),
        ({"functions": [{"name": "f"}]}, "legacy"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "web_search"}]}, "tool type"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "data: URLs",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}
                        ],
                    }
                ]
            },
            "bmp",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
                        ],
                    }
                ]
            },
            "audio",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}
                ]
            },
            "file_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "file",
                                "file": {"file_data": "data:application/zip;base64,AA"},
                            }
                        ],
                    }
                ]
            },
            "zip",
        ),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "legacy"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[1]"},
                            }
                        ],
                    }
                ]
            },
            "object",
        ),
        ({"messages": "hi"}, "array"),
    ],
)
def test_unsupported_requests_raise_conversion_error(extra, match):
    req = {"messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(ConversionError, match=re.escape(match)):
        openai_request_to_converse(req)


# ==================================================================================
# responses
# ==================================================================================


def test_response_conversion_with_tools_reasoning_and_cache_usage():
    resp = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {
                        "reasoningContent": {
                            "reasoningText": {"text": "Let me see.", "signature": "sig"}
                        }
                    },
                    {"text": "Checking "},
                    {"text": "now."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_1",
                            "name": "weather",
                            "input": {"city": "Oslo"},
                        }
                    },
                    {"image": {"format": "png", "source": {"bytes": "AA"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 11,
            "outputTokens": 7,
            "totalTokens": 84,
            "cacheReadInputTokens": 22,
            "cacheWriteInputTokens": 44,
        },
        "metrics": {"latencyMs": 120},
    }
    out = converse_response_to_openai(resp, "public")
    assert out["object"] == "chat.completion" and out["model"] == "public"
    assert out["id"].startswith("chatcmpl-")
    (choice,) = out["choices"]
    msg = choice["message"]
    assert msg["content"] == "Checking now."
    assert msg["reasoning_content"] == "Let me see."
    (call,) = msg["tool_calls"]
    assert call["id"] == "tooluse_1" and call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert choice["finish_reason"] == "tool_calls"
    u = out["usage"]
    assert u["prompt_tokens"] == 11 + 22 + 44
    assert u["completion_tokens"] == 7
    assert u["total_tokens"] == 11 + 22 + 44 + 7
    assert u["prompt_tokens_details"] == {"cached_tokens": 22, "cache_write_tokens": 44}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("malformed_tool_use", "stop"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(reason, finish):
    assert finish_from_converse(reason) == finish


def test_usage_without_cache_fields():
    u = usage_from_converse({"inputTokens": 5, "outputTokens": 3, "totalTokens": 8})
    assert (
        u.prompt_tokens,
        u.completion_tokens,
        u.cached_tokens,
        u.cache_write_tokens,
        u.found,
    ) == (5, 3, 0, 0, True)
    assert usage_from_converse(None).found is False


@pytest.mark.parametrize(
    "resp",
    [
        [],
        {},
        {"output": {}},
        {"output": {"message": {"content": "text"}}},
        {"output": {"message": {"content": [{"text": 5}]}}},
        {"output": {"message": {"content": [{"toolUse": {"name": "f"}}]}}},
        {"output": {"message": {"content": [7]}}},
    ],
)
def test_malformed_responses_raise(resp):
    with pytest.raises(UpstreamProtocolError):
        converse_response_to_openai(resp, "m")


def test_text_only_response_has_no_tool_calls_and_empty_content_is_null():
    out = converse_response_to_openai(
        {
            "output": {"message": {"role": "assistant", "content": []}},
            "stopReason": "max_tokens",
            "usage": {},
        },
        "m",
    )
    assert out["choices"][0]["message"]["content"] is None
    assert "tool_calls" not in out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == "length"


# ==================================================================================
# ConverseStream
# ==================================================================================


def ev(event_type: str, obj: dict[str, Any], pad: bool = True) -> bytes:
    """One ConverseStream event as Bedrock frames it (with its `p` padding field)."""
    if pad:
        obj = {**obj, "p": "abcdefghij"[: 1 + len(event_type) % 9]}
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(obj).encode(),
    )


def exc(kind: str, message: str) -> bytes:
    return encode_message(
        {
            ":exception-type": kind,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )


TOOL_PIECES = ['{"ci', 'ty": "Pa', 'ris", "days"', ": 3}"]
USAGE = {
    "inputTokens": 30,
    "outputTokens": 12,
    "totalTokens": 49,
    "cacheReadInputTokens": 5,
    "cacheWriteInputTokens": 2,
}


def converse_stream(
    texts=("Hel", "lo, ", "wörld ✓"),
    reasoning=("Think", "ing."),
    tools=(("tooluse_A", "get_weather", TOOL_PIECES),),
    stop="tool_use",
    usage=USAGE,
    end=True,
    metadata=True,
) -> bytes:
    out = [ev("messageStart", {"role": "assistant"})]
    idx = 0
    if reasoning:
        for r in reasoning:
            out.append(
                ev(
                    "contentBlockDelta",
                    {"contentBlockIndex": idx, "delta": {"reasoningContent": {"text": r}}},
                )
            )
        out.append(
            ev(
                "contentBlockDelta",
                {"contentBlockIndex": idx, "delta": {"reasoningContent": {"signature": "sig"}}},
            )
        )
        out.append(ev("contentBlockStop", {"contentBlockIndex": idx}))
        idx += 1
    for t in texts:
        out.append(ev("contentBlockDelta", {"contentBlockIndex": idx, "delta": {"text": t}}))
    if texts:
        out.append(ev("contentBlockStop", {"contentBlockIndex": idx}))
        idx += 1
    for tid, name, pieces in tools:
        out.append(
            ev(
                "contentBlockStart",
                {"contentBlockIndex": idx, "start": {"toolUse": {"toolUseId": tid, "name": name}}},
            )
        )
        for p in pieces:
            out.append(
                ev(
                    "contentBlockDelta",
                    {"contentBlockIndex": idx, "delta": {"toolUse": {"input": p}}},
                )
            )
        out.append(ev("contentBlockStop", {"contentBlockIndex": idx}))
        idx += 1
    if end:
        out.append(ev("messageStop", {"stopReason": stop}))
        if metadata:
            out.append(ev("metadata", {"usage": usage, "metrics": {"latencyMs": 321}}))
    return b"".join(out)


FULL = converse_stream()


def test_fixture_is_a_valid_converse_stream_for_botocore():
    """The builder's bytes parse as ConverseStream events in botocore's own client."""
    client = botocore.session.get_session().create_client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id=AK, aws_secret_access_key=SK
    )

    class Raw:
        def stream(self, **_kw):
            yield FULL

    def before_send(request, **_kw):
        return AWSResponse(
            request.url, 200, {"content-type": "application/vnd.amazon.eventstream"}, Raw()
        )

    client.meta.events.register("before-send.bedrock-runtime.ConverseStream", before_send)
    resp = client.converse_stream(
        modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}]
    )
    events = list(resp["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
    )
    assert text == "Hello, wörld ✓"
    assert events[-1]["metadata"]["usage"]["inputTokens"] == 30


def parse_sse(data: bytes) -> list[bytes]:
    out = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block
        out.append(block[6:])
    return out


def acc_openai(data: bytes) -> dict[str, Any]:
    res: dict[str, Any] = {
        "content": "",
        "reasoning": "",
        "tools": {},
        "finish": None,
        "usage": None,
        "done": False,
        "errors": [],
        "roles": 0,
    }
    for d in parse_sse(data):
        assert not res["done"], "data after [DONE]"
        if d == b"[DONE]":
            res["done"] = True
            continue
        c = json.loads(d)
        if "error" in c:
            res["errors"].append(c["error"])
            continue
        assert c["object"] == "chat.completion.chunk" and c["id"].startswith("chatcmpl-")
        if "usage" in c:
            assert c["choices"] == []
            res["usage"] = c["usage"]
        for ch in c["choices"]:
            assert res["finish"] is None, "delta after the finish chunk"
            delta = ch["delta"]
            res["roles"] += 1 if delta.get("role") else 0
            res["content"] += delta.get("content") or ""
            res["reasoning"] += delta.get("reasoning_content") or ""
            for tc in delta.get("tool_calls") or []:
                t = res["tools"].setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                if tc.get("id"):
                    assert t["id"] is None
                    t["id"], t["name"] = tc["id"], tc["function"]["name"]
                t["args"] += tc["function"].get("arguments") or ""
            res["finish"] = ch["finish_reason"] or res["finish"]
    return res


def run(conv, data: bytes, cuts: list[int] | None = None) -> bytes:
    pieces = [data[i : i + 1] for i in range(len(data))] if cuts is None else _cut(data, cuts)
    return b"".join(conv.feed(p) for p in pieces) + conv.close()


def check_full(res: dict[str, Any]) -> None:
    assert res["roles"] == 1
    assert res["content"] == "Hello, wörld ✓"
    assert res["reasoning"] == "Thinking."
    assert res["tools"] == {
        0: {"id": "tooluse_A", "name": "get_weather", "args": "".join(TOOL_PIECES)}
    }
    assert json.loads(res["tools"][0]["args"]) == {"city": "Paris", "days": 3}
    assert res["finish"] == "tool_calls"
    assert res["done"] and not res["errors"]


def test_full_stream_with_usage():
    conv = ConverseStreamToOpenAI("public", include_usage=True)
    res = acc_openai(conv.feed(FULL) + conv.close())
    check_full(res)
    want_prompt = (
        USAGE["inputTokens"] + USAGE["cacheReadInputTokens"] + USAGE["cacheWriteInputTokens"]
    )
    assert res["usage"]["prompt_tokens"] == want_prompt
    assert res["usage"]["completion_tokens"] == USAGE["outputTokens"]
    assert res["usage"]["prompt_tokens_details"]["cached_tokens"] == USAGE["cacheReadInputTokens"]
    assert conv.usage.cache_write_tokens == USAGE["cacheWriteInputTokens"] and conv.usage.found


def test_without_include_usage_usage_is_still_tracked():
    conv = ConverseStreamToOpenAI("m")
    res = acc_openai(conv.feed(FULL) + conv.close())
    assert res["usage"] is None and res["done"]
    assert conv.usage.completion_tokens == USAGE["outputTokens"]


@SPLITS
@given(data=st.data())
def test_random_splits_give_the_same_stream(data):
    cuts = data.draw(st.lists(st.integers(0, len(FULL)), max_size=20))
    check_full(acc_openai(run(ConverseStreamToOpenAI("m", True), FULL, cuts)))


def test_byte_by_byte():
    out = run(ConverseStreamToOpenAI("m", True), FULL)
    check_full(acc_openai(out))


def test_first_text_leaves_as_soon_as_its_event_is_complete():
    conv = ConverseStreamToOpenAI("m")
    first = ev("messageStart", {"role": "assistant"})
    delta = ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
    assert b'"role":"assistant"' in conv.feed(first)
    assert conv.feed(delta[:-1]) == b""
    assert b'"content":"Hi"' in conv.feed(delta[-1:])


def test_openai_sdk_reads_converted_stream():
    import openai

    conv = ConverseStreamToOpenAI("public", include_usage=True)
    body = conv.feed(FULL) + conv.close()
    client = openai.OpenAI(
        api_key="k", base_url="http://t/v1", http_client=_mock_client(body, "text/event-stream")
    )
    stream = client.chat.completions.create(
        model="public", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    content, args, finish, usage = "", "", None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                args += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert content == "Hello, wörld ✓"
    assert json.loads(args) == {"city": "Paris", "days": 3}
    assert finish == "tool_calls"
    assert usage.prompt_tokens == 37 and usage.prompt_tokens_details.cached_tokens == 5


def _mock_client(body: bytes, ctype: str) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": ctype}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def test_chain_to_anthropic_client():
    import anthropic

    chain = ChainStream(
        ConverseStreamToOpenAI("claude-pub", True), OpenAIToAnthropicStream("claude-pub")
    )  # type: ignore[arg-type]
    body = b"".join(chain.feed(FULL[i : i + 97]) for i in range(0, len(FULL), 97)) + chain.close()
    client = anthropic.Anthropic(
        api_key="k", base_url="http://t", http_client=_mock_client(body, "text/event-stream")
    )
    with client.messages.stream(
        model="claude-pub", max_tokens=9, messages=[{"role": "user", "content": "q"}]
    ) as s:
        msg = s.get_final_message()
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[1].text == "Hello, wörld ✓"
    assert msg.content[2].input == {"city": "Paris", "days": 3}
    assert msg.stop_reason == "tool_use"
    assert msg.usage.cache_read_input_tokens == 5
    # Bedrock's own split survives the hub: uncached input, cache read, cache write
    assert msg.usage.input_tokens == USAGE["inputTokens"]
    assert msg.usage.cache_creation_input_tokens == USAGE["cacheWriteInputTokens"]
    assert msg.usage.output_tokens == 12


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("guardrail_intervened", "content_filter")],
)
def test_stop_reasons_in_stream(stop, finish):
    data = converse_stream(reasoning=(), tools=(), stop=stop)
    res = acc_openai(run(ConverseStreamToOpenAI("m"), data, []))
    assert res["finish"] == finish and res["content"] == "Hello, wörld ✓"


def test_two_tool_calls_get_consecutive_indexes():
    data = converse_stream(
        texts=(),
        reasoning=(),
        tools=(("t1", "a", ['{"x":', "1}"]), ("t2", "b", ["{}"])),
    )
    res = acc_openai(run(ConverseStreamToOpenAI("m"), data, []))
    assert res["tools"] == {
        0: {"id": "t1", "name": "a", "args": '{"x":1}'},
        1: {"id": "t2", "name": "b", "args": "{}"},
    }


def test_metadata_missing_after_message_stop_closes_without_usage():
    conv = ConverseStreamToOpenAI("m", include_usage=True)
    res = acc_openai(run(conv, converse_stream(metadata=False), []))
    assert res["done"] and res["usage"] is None and res["finish"] == "tool_calls"
    assert conv.usage.found is False


def test_metadata_before_message_stop_still_ends_once():
    data = (
        ev("messageStart", {"role": "assistant"})
        + ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})
        + ev("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}})
        + ev("messageStop", {"stopReason": "end_turn"})
    )
    res = acc_openai(run(ConverseStreamToOpenAI("m", True), data, []))
    assert res["done"] and res["usage"]["completion_tokens"] == 12 and res["finish"] == "stop"


@pytest.mark.parametrize(
    ("kind", "type_"),
    [
        ("throttlingException", "rate_limit_error"),
        ("validationException", "invalid_request_error"),
        ("modelStreamErrorException", "server_error"),
        ("internalServerException", "server_error"),
        ("serviceUnavailableException", "server_error"),
        ("brandNewException", "server_error"),
    ],
)
def test_exception_events_become_openai_errors(kind, type_):
    data = (
        ev("messageStart", {"role": "assistant"})
        + ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "par"}})
        + exc(kind, "Too many tokens, slow down")
        + ev("messageStop", {"stopReason": "end_turn"})
    )
    conv = ConverseStreamToOpenAI("m", True)
    res = acc_openai(run(conv, data, []))
    assert res["content"] == "par"
    assert res["errors"] == [
        {"message": "Too many tokens, slow down", "type": type_, "param": None, "code": kind}
    ]
    assert not res["done"] and res["finish"] is None  # nothing after the error


def test_error_message_type_uses_its_headers():
    err = encode_message(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}
    )
    res = acc_openai(run(ConverseStreamToOpenAI("m"), err, []))
    assert res["errors"][0]["message"] == "boom" and res["errors"][0]["code"] == "InternalFailure"


def test_error_event_renders_openai_error():
    out = ConverseStreamToOpenAI("m").error_event("upstream died", "server_error")
    (d,) = parse_sse(out)
    assert json.loads(d)["error"]["message"] == "upstream died"


@pytest.mark.parametrize(
    "data",
    [
        FULL[: len(FULL) // 2],  # cut inside a message
        converse_stream(end=False),  # whole events, no messageStop
        b"",
    ],
)
def test_truncated_streams_raise_at_close(data):
    conv = ConverseStreamToOpenAI("m")
    conv.feed(data)
    with pytest.raises(UpstreamProtocolError):
        conv.close()


@pytest.mark.parametrize(
    "bad",
    [
        ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}),  # before start
        ev("messageStart", {}) + ev("messageStart", {}),
        ev("messageStart", {})
        + ev("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{"}}}),
        ev("messageStart", {})
        + ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 5}}),
        ev("messageStart", {}) + ev("contentBlockDelta", {"contentBlockIndex": 0}),
        ev("messageStart", {})
        + ev("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"name": "f"}}}),
        ev("messageStart", {}) + ev("messageStop", {}),
        ev("messageStart", {}) + ev("metadata", {"usage": [1]}),
        ev("messageStart", {})
        + encode_message({":message-type": "event", ":event-type": "messageStop"}, b"{not json"),
        ev("messageStart", {})
        + encode_message({":message-type": "event", ":event-type": "messageStop"}, b"[1]"),
        encode_message({":event-type": "messageStart"}, b"{}"),  # no :message-type
        _flip(FULL, 30),
    ],
)
def test_malformed_streams_raise(bad):
    conv = ConverseStreamToOpenAI("m")
    with pytest.raises(UpstreamProtocolError):
        conv.feed(bad)
        conv.close()


def test_unknown_events_and_message_types_are_skipped():
    data = (
        ev("messageStart", {"role": "assistant"})
        + ev("somethingNew", {"x": 1})
        + encode_message({":message-type": "ping"}, b"")
        + ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"citation": {"title": "t"}}})
        + ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "ok"}})
        + ev("contentBlockStart", {"contentBlockIndex": 1, "start": {"image": {"format": "png"}}})
        + ev("messageStop", {"stopReason": "end_turn"})
        + ev("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}})
    )
    res = acc_openai(run(ConverseStreamToOpenAI("m"), data, []))
    assert res["content"] == "ok" and res["done"]


def test_data_after_the_end_is_ignored():
    conv = ConverseStreamToOpenAI("m")
    out = conv.feed(
        FULL + ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "late"}})
    )
    out += conv.close()
    res = acc_openai(out)
    assert "late" not in res["content"] and res["done"]


def test_oversized_message_raises():
    big = ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x" * 5000}})
    conv = ConverseStreamToOpenAI("m", max_event_bytes=1024)
    conv.feed(ev("messageStart", {}))
    with pytest.raises(UpstreamProtocolError, match="out of bounds"):
        conv.feed(big[:12])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_events_are_output_or_protocol_errors(data):
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )
    kinds = [
        "messageStart",
        "contentBlockStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    events = [ev("messageStart", {"role": "assistant"})]
    for _ in range(data.draw(st.integers(0, 5))):
        events.append(
            ev(
                data.draw(st.sampled_from(kinds)),
                data.draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
            )
        )
    raw = b"".join(events)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=5))
    conv = ConverseStreamToOpenAI("m", True)
    try:
        for piece in _cut(raw, cuts):
            conv.feed(piece)
        conv.close()
    except UpstreamProtocolError:
        pass
    conv.error_event("x")
