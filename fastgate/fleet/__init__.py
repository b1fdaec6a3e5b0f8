"""State shared by every worker and instance of a fleet, through Redis.

`redis.FleetRedis` is the one connection pool per worker, with the outage
policy of `[ratelimit] on_redis_error`; the shared engines (rate-limit leases,
concurrency slots, budgets, upstream cooldowns) are built on it. The policy
layer (`fastgate.gateway`) never imports this package: the App hands it the
objects, which it calls through their methods.
"""
