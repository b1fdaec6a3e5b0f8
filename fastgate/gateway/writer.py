"""The response as the client receives it, and the one way a request ends.

`ResponseWriter` frames the client's response: the head waits in `head_out`
to leave with the first body bytes; body bytes are framed (content-length
passthrough, chunked, or close-delimited for HTTP/1.0) into `out`, which is
written in one `client.write` per upstream read (`flush`). `end` is the end of
every proxied request, in this order and once: the upstream connection goes
back to the pool, the request is accounted (`accounting.account`, the same call
as the fast path's: its record leaves the worker), the last bytes are written
(so a client never has a whole answer whose record is still in the worker),
and the client connection is handed back (`client.finish`), or not when the
client is gone.

Gateway time (the record's `gateway_ms`) is the latency minus the request's
upstream windows. A window opens when an attempt starts (`t_up`: asking the
pool for a connection, connecting, writing, waiting for the head and reading
the response are the upstream's) and closes when the attempt fails or its
response's last byte arrived (`up_s` adds the closed ones up). What is left is
the gateway's own: auth, admission (its Redis round trips included), routing,
moving on to the next candidate, converting a collected body, the last write
to the client and accounting. A stream is forwarded inside its window.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastgate.gateway.accounting import account
from fastgate.http.flow import PEER_SLOW
from fastgate.http.responses import CHUNK_END, simple_response
from fastgate.scan.estimate import SAMPLE, estimate_usage

if TYPE_CHECKING:
    from fastgate.http.head import RequestHead
    from fastgate.http.interfaces import ClientSink


class ResponseWriter:
    __slots__ = (
        "app",
        "cache_state",
        "chunked",
        "client",
        "extra_head",
        "force_close",
        "head",
        "head_out",
        "held",
        "last",
        "out",
        "paused",
        "request_id",
        "sample",
        "sent",
        "status",
        "t_first",
        "t_up",
        "up_s",
        "upstream_request_id",
    )

    def __init__(
        self,
        app: Any,
        client: ClientSink,
        head: RequestHead,
        request_id: bytes,
        out: list[bytes] | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.head = head
        self.request_id = request_id
        self.status = 0  # the accepted upstream status (0: no head accepted)
        self.t_first = 0.0  # when that head arrived (time to first byte)
        self.t_up = 0.0  # when the current attempt's upstream window opened (0: none open)
        self.up_s = 0.0  # seconds of the upstream windows already closed
        self.upstream_request_id = b""
        self.head_out: bytes | None = None  # the head, until the first body bytes
        self.out: list[bytes] = [] if out is None else out  # framed bytes not yet written
        self.chunked = False
        self.extra_head = b""  # header lines the gateway adds (x-ratelimit-*), encoded
        self.force_close = False  # close the client connection after this response
        self.paused = False  # the client's write buffer is full: upstream reads stop
        self.last = b""  # the last bytes written to the client (see Exchange.client_lost)
        self.held = b""  # a whole answer `end` writes after the record left (whole(hold=True))
        self.cache_state = b""  # b"hit" / b"miss" for a cacheable request (x-fastgate-cache)
        # For a usage estimate (only read when the upstream reported none): the body
        # bytes given to the client, and the first of them (the chunks, by reference).
        self.sent = 0
        self.sample: list[bytes] = []

    def keep_alive(self) -> bool:
        return self.head.keep_alive and not self.force_close and not self.app.stopping

    def begin(self, parts: list[bytes], conn: Any, length: bytes) -> None:
        """Framing (content-length, chunked, or close-delimited) and the head's end;
        the head waits in `head_out` to leave with the first body bytes."""
        head = self.head
        keep = head.keep_alive and not self.force_close and not self.app.stopping
        if self.extra_head:
            parts.append(self.extra_head)
        if self.cache_state:
            parts.append(b"x-fastgate-cache: %b\r\n" % self.cache_state)
        if length:
            parts.append(b"content-length: %b\r\n" % length)
        elif head.http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self.chunked = True
        else:  # HTTP/1.0 and no length: the close ends the body
            keep = False
            self.force_close = True
        parts.append(b"\r\n" if keep else b"connection: close\r\n\r\n")
        self.head_out = b"".join(parts)
        if self.paused and conn is not None:
            conn.pause_reading()

    def frame(self, data: bytes) -> None:
        """Frame bytes already in the client's format."""
        sent = self.sent
        if sent < SAMPLE:  # the first bytes, kept by reference for an estimate
            self.sample.append(data)
        self.sent = sent + len(data)
        out = self.out
        if self.head_out is not None:
            out.append(self.head_out)
            self.head_out = None
        if self.chunked:
            out.append(b"%x\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
        else:
            out.append(data)

    def flush(self) -> None:
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.last = data
            self.client.write(data)

    def mid_event(self) -> bool:
        """Do the body bytes framed so far stop inside an SSE event (no blank line
        after the last one)? Read at an abort only, from the last bytes framed."""
        out = self.out
        if out:
            tail = out[-2] if self.chunked and len(out) > 1 else out[-1]
        else:
            tail = self.last[:-2] if self.chunked else self.last
        return bool(tail) and not tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))

    def whole(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        extra: Any = (),
        hold: bool = False,
    ) -> bool:
        """Write a whole response (nothing of another must have been sent);
        return whether the connection is kept alive. `hold`: a request that is
        accounted next (`end`) is written there, after its record left."""
        keep = self.keep_alive()
        if 200 <= status < 300:  # a converted non-stream answer: what an estimate reads
            self.sample = [body]
            self.sent = len(body)
        if self.cache_state:
            extra = (*extra, (b"x-fastgate-cache", self.cache_state))
        data = simple_response(
            status,
            body,
            content_type=content_type,
            request_id=self.request_id,
            keep_alive=keep,
            extra=extra,
            raw=self.extra_head if 200 <= status < 300 else b"",
        )
        if self.head.method == b"HEAD":  # its length is announced, never sent (RFC 9110)
            data = data[: len(data) - len(body)]
        if hold:
            self.held = data
        else:
            self.client.write(data)
        return keep

    def reset(self) -> None:
        """Forget what a failed attempt's response head set up (nothing was sent);
        its upstream window closes."""
        if self.t_up:
            self.up_s += time.time() - self.t_up
            self.t_up = 0.0
        self.head_out = None
        self.out.clear()
        self.chunked = False
        self.status = 0
        self.t_first = 0.0
        self.upstream_request_id = b""
        self.sent = 0
        self.sample = []

    def end(
        self,
        status: int,
        error_code: str,
        usage: Any,
        token: Any,
        ingress: str,
        channel: Any,
        model: str,
        upstream_model: str,
        stream: bool,
        price: Any,
        ratio: int,
        attempts: int,
        limited: Any = None,
        release: Any = None,
        terminate: bool = False,
        cache_hit: bool = False,
        router: str = "",
    ) -> None:
        """The end of a proxied request, fast path and general exchange alike:
        flush -> release the connection -> account -> hand the client connection
        back. `terminate`: end the body's framing first (the head if no body byte
        came, the last chunk). `cache_hit`: answered from the response cache (no
        cost, and no tokens counted against the key's tpm). `router`: the [[routers]]
        name that chose `model` (the record's router)."""
        out = self.out
        if terminate:
            if self.head_out is not None:
                out.append(self.head_out)
                self.head_out = None
            if self.chunked:
                out.append(CHUNK_END)
        data = self.held
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
        app = self.app
        if (
            (not usage.found or usage.partial)
            and 200 <= self.status < 300
            and channel is not None
            and not cache_hit
            and (status < 300 or status == 499 or self.sent)
        ):
            # The upstream answered but reported no usage, or the stream ended (the
            # client left, the upstream died) before its (final) usage event: tokens
            # are estimated from the request and the bytes the client was sent
            # (scan/estimate.py).
            head = self.head
            usage = estimate_usage(head.path, head.body, stream, self.sample, self.sent, usage)
        if release is not None and release.key is not None:
            app.pool.release(release)
        app.inflight -= 1
        counts = app.metrics.status
        counts[status] = counts.get(status, 0) + 1
        # The record leaves the worker (one send to its writer process) before the
        # answer's last bytes: a worker killed once a client has its whole answer
        # has sent that answer's record.
        wait = account(
            app,
            self.head,
            self.request_id,
            token,
            ingress,
            channel,
            model,
            upstream_model,
            stream,
            status,
            error_code,
            usage,
            price,
            ratio,
            self.t_first,
            attempts,
            self.client.client_ip,
            cache_hit,
            router=router,
            # latency minus the windows; one still open closes now, so it ends the count
            gateway_ms=int(((self.t_up or time.time()) - self.head.t0 - self.up_s) * 1e6) / 1000,
        )
        if limited is not None:  # the admission's ticket
            app.limits.done(
                token, 0 if cache_hit else usage.prompt_tokens + usage.completion_tokens, limited
            )
        if wait is not None and not wait.done() and status != 499:
            # Near a budget: the answer's last bytes wait for the fleet's counter to
            # hold this request's cost (`Budgets.charge`). The connection stays this
            # exchange's meanwhile: a pipelined request waits its turn, and a client
            # that leaves finds the exchange done (its loss costs nothing more).
            wait.add_done_callback(lambda _: self.release(data, status))
            return
        self.release(data, status)

    def release(self, data: bytes, status: int) -> None:
        """The answer's last bytes out, and the client connection handed back."""
        client = self.client
        if data:
            self.held = b""
            self.last = data
            client.write(data)
        if client.gate.reasons:
            client.gate.resume(PEER_SLOW)
        if status == 499:
            return
        client.finish(self.head.keep_alive and not self.force_close and not self.app.stopping)


def without_rate_headers(forward: list[bytes]) -> list[bytes]:
    """The upstream's forwarded header pieces (name, ": ", value, CRLF) minus its
    own x-ratelimit-* (its account's limits): a key with limits gets the
    gateway's x-ratelimit-* for the key instead, never both."""
    out: list[bytes] = []
    for i in range(0, len(forward), 4):
        if not forward[i].lower().startswith(b"x-ratelimit-"):
            out += forward[i : i + 4]
    return out
