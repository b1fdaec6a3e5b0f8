-- fastgate schema, version 1 (SQLite). Money is integer micro-dollars (INTEGER);
-- times are unix seconds (REAL). Keep in step with 0001_init.postgres.sql.

-- One row: bumped by every config write; instances poll it and LISTEN for it.
CREATE TABLE config_version (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    BIGINT NOT NULL,
    updated_at REAL NOT NULL
);
INSERT INTO config_version (id, version, updated_at)
VALUES (1, 1, CAST(strftime('%s', 'now') AS REAL));

-- Channels created through the store. `spec` holds the ChannelConfig fields that
-- were given and are not columns; `secret` is the AES-GCM sealed JSON of the
-- credentials named in `secret_fields` (comma-separated), never plaintext.
CREATE TABLE channels (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    priority      INTEGER NOT NULL DEFAULT 0,
    weight        INTEGER NOT NULL DEFAULT 1,
    spec          TEXT NOT NULL DEFAULT '{}',
    secret        BLOB,
    secret_fields TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);

-- API keys: only the SHA-256 of a key is stored.
CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    key_sha256   TEXT NOT NULL UNIQUE,
    group_name   TEXT NOT NULL DEFAULT 'default',
    quota_micros BIGINT NOT NULL DEFAULT -1,
    expires_at   REAL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    spec         TEXT NOT NULL DEFAULT '{}',
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);

-- Prices in micro-dollars per 1M tokens; NULL = not given (input/output: 0,
-- cache_*: same as input). Tiers and multipliers live in `spec`.
CREATE TABLE prices (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    model              TEXT NOT NULL UNIQUE,
    input_micros       BIGINT,
    output_micros      BIGINT,
    cache_read_micros  BIGINT,
    cache_write_micros BIGINT,
    alias_of           TEXT NOT NULL DEFAULT '',
    spec               TEXT NOT NULL DEFAULT '{}',
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL
);

CREATE TABLE groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    ratio      REAL NOT NULL DEFAULT 1.0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- Quota used per token name (file and store tokens alike), updated only by
-- atomic increments so that instances sharing the database never lose one.
CREATE TABLE quota_usage (
    token_name  TEXT PRIMARY KEY,
    used_micros BIGINT NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);

-- One row per request (UsageRecord). `uid` is unique per record: replays of a
-- spooled batch insert nothing twice.
CREATE TABLE usage_records (
    uid                TEXT PRIMARY KEY,
    ts                 REAL NOT NULL,
    request_id         TEXT NOT NULL DEFAULT '',
    key_name           TEXT NOT NULL DEFAULT '',
    group_name         TEXT NOT NULL DEFAULT '',
    ingress            TEXT NOT NULL DEFAULT '',
    channel            TEXT NOT NULL DEFAULT '',
    provider           TEXT NOT NULL DEFAULT '',
    model              TEXT NOT NULL DEFAULT '',
    upstream_model     TEXT NOT NULL DEFAULT '',
    stream             INTEGER NOT NULL DEFAULT 0,
    status             INTEGER NOT NULL DEFAULT 0,
    error_code         TEXT NOT NULL DEFAULT '',
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    cached_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    estimated          INTEGER NOT NULL DEFAULT 0,
    cost_micros        BIGINT NOT NULL DEFAULT 0,
    latency_ms         REAL NOT NULL DEFAULT 0,
    ttfb_ms            REAL NOT NULL DEFAULT 0,
    attempts           INTEGER NOT NULL DEFAULT 0,
    client_ip          TEXT NOT NULL DEFAULT '',
    tag                TEXT NOT NULL DEFAULT '',
    cache_hit          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_records_ts ON usage_records (ts);
CREATE INDEX usage_records_key_ts ON usage_records (key_name, ts);
CREATE INDEX usage_records_model_ts ON usage_records (model, ts);
CREATE INDEX usage_records_tag_ts ON usage_records (tag, ts);
