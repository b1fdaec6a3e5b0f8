"""Batch results billed at download: `GET /v1/files/{file_id}/content` of a batch output file.

A batch's usage is only visible in its output file, so the gateway bills a
batch when a client downloads that file through it (the batch's own calls,
`POST /v1/batches` and the retrieval of the batch object, are passed through
and cost nothing):

- scan: the file's bytes go to the client as they arrive (passthrough, never
  held); `BatchOutput.feed` reads them line by line, keeping only the
  unfinished last line (bounded by `MAX_LINE`: a longer line is skipped,
  counted and logged, never held). A line is a batch output line when it is a
  JSON object with `custom_id` and `response`; when the file's first line is
  not one (an uploaded input file, any other file), scanning stops for good
  and nothing is billed. A result is billed when its `response.status_code`
  is 2xx and its `response.body` has a `model` and a `usage` (read with the
  usage codec, `vocab/usage.py`: chat, completions, embeddings, Responses);
  failed lines (`error`, non-2xx) cost nothing, as upstream they cost nothing;
- price: each result at the model's price with `batch_multiplier` (service
  tier "batch"), whatever tier the line itself reports; the model is the
  body's `model` as the channel's `model_map` maps it back, or as it is, or
  without a `-YYYY-MM-DD` snapshot suffix (the first of these with a price;
  none: recorded `unpriced`, cost 0). Results are summed per model before the
  one rounding (`billing.batch_amount`, `micros_of`), with the key's group ratio;
- when: only a complete download (the upstream's body ended cleanly and all
  of it was forwarded to the client) bills; a download cut by either side
  bills nothing, and a later complete download of the same file bills it;
- records: one per model seen (not one per result: a file may hold 50,000),
  request id `batch:<file_id>`, uid `batch:<file_id>:<upstream model>`,
  tokens summed, the cost, `service_tier` "batch", the key charged (quota and
  budgets) with the sum;
- never twice: a file id is remembered by the process once its billing
  starts; before billing, the store is asked whether the records' uids exist
  (an earlier download on another worker, instance, or before a restart).
  The uids are deterministic, so even two downloads racing on two instances
  (both asking before either's records reached the store, ~0.1-0.5 s) leave
  one set of records (the writer's `ON CONFLICT (uid) DO NOTHING`); in that
  window, or with the store unreachable (the look-up fails: billed anyway),
  the key's quota and budget may be charged twice, the records never.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

from fastgate.gateway.billing import batch_amount, micros_of
from fastgate.vocab.usage import Usage, usage_from_openai

log = logging.getLogger("fastgate.gateway")

MAX_LINE = 8 * 1024 * 1024  # a result line longer than this is skipped (and logged)
FILE_CONTENT_PATH = re.compile(rb"/v1/files/([A-Za-z0-9_.:-]{1,200})/content")
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")

# File ids whose billing started in this process (the store answers for the others).
_started: set[str] = set()


def file_id(path: bytes) -> str:
    """The file id of a `/v1/files/{id}/content` path, or ""."""
    m = FILE_CONTENT_PATH.fullmatch(path)
    return m.group(1).decode("ascii") if m else ""


class BatchOutput:
    """The usage scanner of a file download (`Transform` kind SCAN: bytes pass as
    they are). `usage` is the download's own (no tokens)."""

    __slots__ = (
        "ex",
        "file_id",
        "held",
        "lines",
        "long_lines",
        "models",
        "off",
        "parts",
        "skip",
        "usage",
    )

    def __init__(self, ex: Any, fid: str) -> None:
        self.ex = ex
        self.file_id = fid
        self.usage = Usage()
        self.parts: list[bytes] = []  # the unfinished last line
        self.held = 0
        self.skip = False  # inside a line over MAX_LINE: dropped up to its newline
        self.off = False  # not a batch output file: nothing more is read
        self.long_lines = 0
        self.lines = 0  # batch output lines read
        # upstream model -> [model, price, prompt, completion, cached, cache write, amount, n]
        self.models: dict[str, list[Any]] = {}

    def feed(self, data: bytes) -> bytes:
        if self.off:
            return data
        nl = data.find(b"\n")
        if nl < 0:
            self._hold(data)
            return data
        if self.skip:
            self.skip = False
        elif self.parts:
            self.parts.append(data[:nl])
            self._line(b"".join(self.parts))
        else:
            self._line(data[:nl])
        self.parts = []
        self.held = 0
        start = nl + 1
        while not self.off:
            nl = data.find(b"\n", start)
            if nl < 0:
                if start < len(data):
                    self._hold(data[start:])
                break
            self._line(data[start:nl])
            start = nl + 1
        return data

    def _hold(self, piece: bytes) -> None:
        if self.skip:
            return
        self.held += len(piece)
        if self.held > MAX_LINE:
            self.parts = []
            self.held = 0
            self.skip = True
            self.long_lines += 1
        else:
            self.parts.append(piece)

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is not dict or "custom_id" not in obj or "response" not in obj:
            if not self.lines:  # the first line: not a batch output file
                self.off = True
            return
        self.lines += 1
        resp = obj["response"]
        if type(resp) is not dict:
            return
        status = resp.get("status_code")
        body = resp.get("body")
        if type(status) is not int or not 200 <= status < 300 or type(body) is not dict:
            return  # a failed request: not billed (nor upstream)
        model = body.get("model")
        raw = body.get("usage")
        if type(model) is not str or not model or type(raw) is not dict:
            return
        u = usage_from_openai(raw)
        acc = self.models.get(model)
        if acc is None:
            acc = self.models[model] = [*self._price(model), 0, 0, 0, 0, 0, 0]
        acc[2] += u.prompt_tokens
        acc[3] += u.completion_tokens
        acc[4] += u.cached_tokens
        acc[5] += u.cache_write_tokens
        if acc[1] is not None:
            acc[6] += batch_amount(acc[1], u)
        acc[7] += 1

    def _price(self, upstream: str) -> tuple[str, Any]:
        """The public model name and price (None: unpriced) of an upstream model."""
        prices = self.ex.app.snapshot.prices
        ch = self.ex.attempts.channel
        back = next((k for k, v in ch.model_map.items() if v == upstream), "")
        names = [n for n in (back, upstream, _SNAPSHOT.sub("", upstream)) if n]
        for n in names:
            price = prices.get(n)
            if price is not None:
                return n, price
        return names[0], None

    def close(self) -> bytes:
        """An abort (a cut download): nothing is billed."""
        self.off = True
        return b""

    def complete(self) -> None:
        """The whole file went through: bill what it reported (module docstring)."""
        if self.off:
            return
        if self.parts and not self.skip:  # a last line without its newline
            self._line(b"".join(self.parts))
        self.parts = []
        if self.long_lines:
            log.warning(
                "batch output %s: %d result line(s) over %d bytes not read (not billed)",
                self.file_id,
                self.long_lines,
                MAX_LINE,
            )
        billed = self.models
        fid = self.file_id
        if not billed or fid in _started:
            return
        _started.add(fid)
        ex = self.ex
        app = ex.app
        app.spawn(
            _bill(app, ex.ctx.token, ex.attempts.channel, ex.ctx.head, ex.client, fid, billed)
        )


async def _bill(
    app: Any, token: Any, channel: Any, head: Any, client: Any, fid: str, models: dict[str, Any]
) -> None:
    """Write the file's records and charge the key, unless the store has them."""
    uids = [f"batch:{fid}:{m}" for m in models]
    lookup = app.uids_present
    if lookup is not None:
        try:
            if await lookup(uids):
                log.info("batch output %s was billed before: not billed again", fid)
                return
        except Exception as exc:
            log.warning("batch output %s: billed without the store's check (%s)", fid, exc)
    ratio = app.snapshot.group_ratio.get(token.group, 1_000_000)
    now = time.time()
    total = 0
    tag = head.tag.decode("latin-1") if head.tag else ""
    for (upstream, acc), uid in zip(models.items(), uids, strict=True):
        model, price, prompt, completion, cached, write, amount, _n = acc
        cost = micros_of(amount, ratio) if price is not None else 0
        total += cost
        app.sink.append(
            (
                now,
                f"batch:{fid}",
                token.name,
                token.group,
                "openai",
                channel.name,
                channel.type,
                model,
                upstream,
                False,
                200,
                "",
                prompt,
                completion,
                cached,
                write,
                False,
                cost,
                0.0,
                0.0,
                1,
                client.client_ip,
                tag,
                False,
                uid,
                price is None,
                "",
                "batch",
                0.0,
            )
        )
    if total:
        app.charge(token, total)
    log.info("batch output %s billed: %d model(s), %d micro-USD", fid, len(models), total)
