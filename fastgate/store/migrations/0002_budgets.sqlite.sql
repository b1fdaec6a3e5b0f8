-- Budgets (version 2, SQLite). Keep in step with 0002_budgets.postgres.sql.

-- A group's budget_usd / budget_period live in its spec, as a token's do.
ALTER TABLE groups ADD COLUMN spec TEXT NOT NULL DEFAULT '{}';

-- Spend per budget subject (a key or a group, by name) per period, updated only
-- by atomic increments (write-behind, like quota_usage). A new period is a new row.
CREATE TABLE budget_spend (
    subject_kind TEXT NOT NULL,
    subject_name TEXT NOT NULL,
    period       TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    spent_micros BIGINT NOT NULL DEFAULT 0,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (subject_kind, subject_name, period, period_start)
);
CREATE INDEX budget_spend_start ON budget_spend (period_start);
