-- 003: per-user, per-month sequence number of a usage event (the Redis request count after it), so
-- `tollgate reconcile` compares Redis and Postgres at one exact point under live traffic.
ALTER TABLE ai_usage_log ADD COLUMN IF NOT EXISTS seq bigint;
