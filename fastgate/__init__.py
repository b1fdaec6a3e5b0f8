"""fastgate: a fast LLM API gateway.

Layers, each importing only the ones below it (checked in CI by `lint-imports`,
contracts in pyproject.toml):

5. composition: `cli/`, `supervisor` (bind, fork and restart the workers,
   relay signals and readiness), `server` (one worker: signals, drain, reload),
   `sdnotify` (sd_notify to systemd or the supervisor), `app`
   (the per-process runtime state), `admin/` (control-plane API), `store/`
   (SQLite/Postgres, and the usage writer process each record is sent to),
   `respcache/` (the response cache's memory and Redis backends), `fleet/`
   (state shared through Redis: rate-limit leases, budgets, cooldowns),
   `siblings` (what the workers of `--workers N` tell each other: metrics,
   status, breakers), `webhooks` (events posted to an operator's URL by a
   background task; the policy layer calls its hooks on transitions).
4. policy: `gateway/` (admission, route plans, the fast path, the general
   exchange as a state machine, limits, breaker, billing, accounting, the
   response cache's policy),
   `providers/` (one registry entry per channel type), `snapshot`, `config/`,
   `metrics`, `logs` (text or JSON application logs).
3. transport: `http/` (client and upstream protocols, pool, flow control; no LLM
   knowledge; the interfaces it calls are `typing.Protocol`s in
   `http/interfaces`).
2. sans-IO: `sse/`, `convert/` (every protocol converter), `scan/` (the one
   JSON-object finder and the usage scanners), `wire/` (SigV4, AWS
   event-stream), `errors` (gateway errors rendered per protocol).
1. vocabulary: `vocab/` (usage codec, error table, header names, protocol
   names, the usage record's field order); imports nothing of fastgate.

A request's flow: bytes -> `http.client.ClientProtocol` (httptools: head, body)
-> `gateway.fast.dispatch`. The plain case (OpenAI request, OpenAI channel, key
without a response cache or concurrency cap; rpm/tpm when they answer at once)
runs on the fast path: auth, one parse, the route plan of the
snapshot, one write upstream (`http.upstream`), bytes forwarded as they arrive,
usage from the body's tail or the stream scanner, `gateway.accounting.account`
(price, charge, one record tuple to the writer). Anything else, and every
unusual event of a fast request (429/5xx, a dead connection, a client that
leaves), goes to `gateway.handler.Exchange`, which ends in the same accounting.
"""

__version__ = "0.1.0"
