"""State shared by every worker and instance of a fleet, through Redis.

`redis.FleetRedis` is the one connection pool per worker, with the outage
policy of `[ratelimit] on_redis_error`; the shared engines (rate-limit leases,
concurrency slots, budgets, upstream cooldowns) are built on it. The policy
layer (`fastgate.gateway`) never imports this package: the App hands it the
objects, which it calls through their methods.

redis-py (with what it imports: about 18 MB of a worker's memory) is loaded only
by a config that names the Redis backend: the App imports `fleet.redis` and the
engines then, and `respcache.build_cache` its Redis backend. The outage counters
are declared here, so that a scrape shows them (0) with either backend.
"""

from fastgate.metrics import declare

ERRORS = declare(
    "fastgate_redis_errors_total",
    "Redis calls that failed or were skipped during an outage (served per on_redis_error).",
)
OUTAGES = declare("fastgate_redis_outages_total", "Redis outages seen (first failure of each).")
