-- Usage record fields of docs/contract.md section 5 (version 3, Postgres). Keep in step with
-- 0003_record_fields.sqlite.sql.
ALTER TABLE usage_records ADD COLUMN unpriced BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE usage_records ADD COLUMN router TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_records ADD COLUMN service_tier TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_records ADD COLUMN gateway_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
