-- Usage record fields of docs/contract.md section 5 (version 3, SQLite). Keep in step with
-- 0003_record_fields.postgres.sql.
ALTER TABLE usage_records ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN router TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_records ADD COLUMN service_tier TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_records ADD COLUMN gateway_ms REAL NOT NULL DEFAULT 0;
