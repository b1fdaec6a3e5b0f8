"""The conversion side of a general exchange: when the channel speaks another protocol.

A 2xx stream gets a stream converter and a head of the client's protocol; any
other response (a non-stream 2xx, or an error) is collected whole and
converted at its end, then written in one response. A stream the converter
cannot read ends with an error event in the client's format.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastgate import errors
from fastgate.convert import convert_error_body
from fastgate.gateway import cache as response_cache
from fastgate.gateway import protocols
from fastgate.gateway.transform import Transform
from fastgate.http.responses import status_line
from fastgate.vocab.redact import redact

if TYPE_CHECKING:
    from fastgate.gateway.handler import Exchange

log = logging.getLogger("fastgate.gateway")


def convert_head(ex: Exchange, conn: Any, status: int) -> None:
    """Response head when converting: a stream converter, or collect the body."""
    ctx = ex.ctx
    if 200 <= status < 300 and ctx.stream:
        try:
            conv = protocols.stream_processor(ex, ex.attempts.channel)
        except errors.FastgateError as err:
            ex.attempts.drop_conn(ex.app, conn)
            ex.local_error(err)
            return
        ex.transform = Transform.converting(conv)
        ctype = (
            b"application/json"
            if ctx.ingress.protocol == protocols.GEMINI and not ctx.ingress.alt_sse
            else b"text/event-stream; charset=utf-8"
        )
        if ex.cache is not None:
            ex.cache.content_type = ctype
        parts = [
            status_line(status),
            b"content-type: %b\r\n" % ctype,
            b"cache-control: no-cache\r\nx-request-id: %b\r\n" % ctx.request_id,
        ]
        rid = ex.writer.upstream_request_id
        if rid:
            parts.append(b"x-upstream-request-id: %b\r\n" % rid)
        ex.writer.begin(parts, conn, b"")
    else:
        ex.transform = Transform.collecting()  # whole body: JSON to convert, or an error


def collect_complete(ex: Exchange, conn: Any) -> None:
    """The whole body is here: convert it (or its error) and answer in one write."""
    if conn.key is not None:
        ex.app.pool.release(conn)
    w = ex.writer
    status = w.status
    tr = ex.transform
    body = tr.collected()
    if body is None:
        ex.local_error(errors.UpstreamError("upstream response too large to convert"))
        return
    if 200 <= status < 300:
        try:
            body, tr.conv_usage = protocols.convert_body(
                ex, ex.attempts.channel, body, conn.forward
            )
        except errors.FastgateError as err:
            ex.local_error(err)
            return
        code = ""
        if status == 200 and ex.cache is not None:
            response_cache.store(ex, body)
    else:
        body = redact(body, channel_secrets(ex.attempts.channel))
        code = f"upstream_{status}"
        if tr.head is not None:  # same protocol: the upstream's own error, as it was
            w.begin(tr.head, None, b"%d" % len(body))
            w.frame(body)
            ex.complete(status, code)
            return
        body = convert_error_body(body, status, ex.ctx.ingress.protocol)
    rid = w.upstream_request_id
    w.whole(status, body, extra=((b"x-upstream-request-id", rid),) if rid else (), hold=True)
    ex.finish(status, code)


def conv_failed(ex: Exchange, exc: Exception, release: Any = None) -> None:
    """The upstream's stream could not be converted: end it with an error event."""
    att = ex.attempts
    if att.conn is not None:
        att.drop_conn(ex.app, att.conn)
    msg = f"upstream sent a malformed stream: {exc}"
    rid = ex.ctx.request_id.decode("latin-1")
    log.warning("request %s: %s", rid, msg, extra={"request_id": rid})
    w = ex.writer
    conv = ex.transform.conv
    if conv is not None:
        w.frame(conv.error_event(msg, "server_error"))
    if not w.chunked:
        w.force_close = True
    ex.complete(502, "upstream_error", release)


def channel_secrets(channel: Any) -> tuple[bytes, ...]:
    """The channel's own credentials, as they could appear in an upstream error."""
    cfg = getattr(channel, "config", None)
    if cfg is None:
        return ()
    found = (cfg.resolve_api_key(), cfg.resolve_secret_access_key(), cfg.resolve_session_token())
    return tuple(s.encode() for s in found if s)
