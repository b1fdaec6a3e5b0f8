"""fastgate: a fast LLM API gateway.

Layers, outermost first:

- `cli` / `server`: parse arguments, load `config`, bind (SO_REUSEPORT), fork
  workers, handle signals (drain on SIGTERM, reload on SIGHUP).
- `http/`: HTTP/1.1 plumbing with no LLM knowledge. `client.ClientProtocol`
  parses requests with httptools; `upstream.UpstreamProtocol` and its `Pool`
  keep connections to providers alive; `flow` tracks why reading is paused.
- `gateway/`: a request's life. `handler.Exchange` authenticates (`auth`),
  routes (`routing`, `breaker`), forwards, reads usage as bytes pass (`usage`),
  prices it (`billing`) and queues one record.
- `snapshot`: the immutable view of config the hot path reads, swapped whole.
- `sse/`, `convert/`: sans-IO stream decoding and protocol conversion.
- `providers/`: wire details per provider, including the in-process `mock`.
- `store/`: everything durable, never on the hot path (`logsink` batches).

A request's flow: bytes -> ClientProtocol (head, body) -> App.dispatch ->
Exchange.start (auth, model, route: dict lookups only) -> Pool.acquire ->
UpstreamProtocol.send (one write) -> up_headers / up_body (scan usage, write to
the client once per upstream read) -> up_complete -> price, record, keep-alive.
"""

__version__ = "0.1.0"
