"""What happens to an attempt's response body on its way to the client.

One `Transform` per accepted response head, of one kind:
- passthrough: the bytes go as they are (or as a usage scanner returns them:
  the OpenAI stream scanner strips the usage chunk the gateway asked for), and
  the scanner reads the usage on the way;
- stream conversion: a converter turns the upstream's stream into the client's
  protocol (`feed` / `close` / `error_event`, usage read as events pass);
- collect: a non-stream response in another protocol (or an error response)
  is held whole, bounded, and converted at the end.
"""

from __future__ import annotations

from typing import Any

from fastgate.convert import error_event
from fastgate.gateway import protocols
from fastgate.gateway.batch_billing import BatchOutput, file_id
from fastgate.scan.anthropic import AnthropicUsage
from fastgate.scan.gemini import GeminiUsage
from fastgate.scan.openai import OpenAIBodyUsage, OpenAIStreamUsage
from fastgate.vocab.usage import Usage

# Kinds.
# Ordered: kinds >= SCAN may hold bytes back until `end`.
PLAIN = 0  # passthrough, nothing to read (a non-2xx answer)
OBSERVE = 1  # passthrough, the scanner only reads (a non-stream OpenAI body)
SCAN = 2  # passthrough, the scanner returns the bytes to forward
STREAM = 3  # stream conversion
COLLECT = 4  # whole body, converted at the end

# Bound on a response body held whole for conversion.
MAX_CONVERT_BODY = 64 * 1024 * 1024


class Transform:
    __slots__ = ("collect", "collect_size", "conv", "conv_usage", "head", "kind", "scanner")

    # Constructors (no __init__: each is one call on the request path).

    @classmethod
    def passthrough(cls, protocol: str, ok: bool, sse: bool, inject: bool) -> Transform:
        """Bytes as they are, usage read from them (a 2xx only)."""
        self = cls.__new__(cls)
        self.conv = self.collect = self.conv_usage = self.scanner = None  # _blank, inline
        self.collect_size = 0
        self.head = None
        if not ok:
            self.kind = PLAIN
        elif protocol == protocols.ANTHROPIC:
            self.kind, self.scanner = SCAN, AnthropicUsage(sse)
        elif protocol == protocols.GEMINI:
            self.kind, self.scanner = SCAN, GeminiUsage()
        elif sse:
            self.kind, self.scanner = SCAN, OpenAIStreamUsage(strip_usage_chunk=inject)
        else:
            self.kind, self.scanner = OBSERVE, OpenAIBodyUsage()
        return self

    @classmethod
    def adopt(cls, scanner: Any) -> Transform:
        """Passthrough around a scanner the fast path already fed (or none)."""
        self = cls.__new__(cls)
        self._blank()
        if scanner is not None:
            self.kind = OBSERVE if scanner.__class__ is OpenAIBodyUsage else SCAN
            self.scanner = scanner
        return self

    @classmethod
    def file_content(cls, ex: Any, status: int) -> Transform:
        """A file's content (`GET /v1/files/{id}/content`): bytes as they are, a
        200's read for batch results (`batch_billing.py`)."""
        self = cls.__new__(cls)
        self._blank()
        fid = file_id(ex.ctx.head.path) if status == 200 else ""
        if fid:
            self.kind, self.scanner = SCAN, BatchOutput(ex, fid)
        return self

    @classmethod
    def converting(cls, conv: Any) -> Transform:
        """A stream converter's output instead of the upstream's bytes."""
        self = cls.__new__(cls)
        self._blank()
        self.kind, self.conv = STREAM, conv
        return self

    @classmethod
    def collecting(cls) -> Transform:
        """Hold the whole body (to convert it, or its error, at the end)."""
        self = cls.__new__(cls)
        self._blank()
        self.kind, self.collect = COLLECT, []
        return self

    def _blank(self) -> None:
        self.kind = PLAIN
        self.scanner: Any = None
        self.conv: Any = None
        self.collect: list[bytes] | None = None
        self.collect_size = 0
        self.conv_usage: Usage | None = None
        self.head: list[bytes] | None = None  # a held passthrough error's head parts

    # Body.

    def feed(self, data: bytes) -> bytes:
        """The client's bytes for `data` (b"" for none yet). A converter may
        raise `UpstreamProtocolError`."""
        kind = self.kind
        if kind == OBSERVE:
            self.scanner.feed(data)
            return data
        if kind == SCAN:
            return self.scanner.feed(data)
        if kind == STREAM:
            return self.conv.feed(data)
        if kind == COLLECT:
            self.collect_size += len(data)
            if self.collect_size <= MAX_CONVERT_BODY:
                self.collect.append(data)
            return b""
        return data

    def end(self) -> bytes:
        """At a clean end of the upstream body: what is left for the client."""
        if self.kind == STREAM:
            return self.conv.close()
        scanner = self.scanner
        if scanner is not None and scanner.__class__ is OpenAIStreamUsage:
            rest = scanner.close()
            if rest:
                return scanner.feed(rest)
        elif scanner.__class__ is BatchOutput:  # a whole download: its results are billed
            scanner.complete()
        return b""

    def collected(self) -> bytes | None:
        """The collected body, or None when it was over the bound."""
        body = b"".join(self.collect or ())
        self.collect = None
        return body if self.collect_size <= MAX_CONVERT_BODY else None

    def abort(self) -> None:
        """On an abort: let the usage scanner count a final event left unterminated."""
        scanner = self.scanner
        if scanner is not None:
            try:
                scanner.close()
            except Exception:  # what it would have forwarded is not wanted any more
                pass

    def error_event(self, protocol: str, stream: bool, message: str) -> bytes | None:
        """An error event in the client's stream format, or None when there is none."""
        if self.conv is not None:
            return self.conv.error_event(message, "server_error")
        if stream and self.scanner is not None:
            return error_event(protocol, message, "server_error")
        return None

    def usage(self) -> Usage:
        if self.scanner is not None:
            return self.scanner.usage
        if self.conv is not None:
            return self.conv.usage
        return self.conv_usage or Usage()
