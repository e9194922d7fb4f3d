-- 001: the guide's tables (ai_user_unlock, ai_usage_log) with every column it names, exact integer
-- nano-USD columns beside its `real` ones, the indexes its troubleshooting asks for, and monthly
-- partitions of ai_usage_log. Safe on a database where the app already created the guide's tables:
-- every row is kept.

-- MARK: ai_user_unlock ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS ai_user_unlock (
    id                 text PRIMARY KEY,
    user_id            text NOT NULL,
    enabled            boolean NOT NULL DEFAULT true,
    max_cost_per_month real,              -- USD, NULL = unlimited (the guide's column)
    notes              text,
    created_at         timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at         timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
-- Columns a pre-existing table might lack.
ALTER TABLE ai_user_unlock ADD COLUMN IF NOT EXISTS enabled boolean NOT NULL DEFAULT true;
ALTER TABLE ai_user_unlock ADD COLUMN IF NOT EXISTS max_cost_per_month real;
ALTER TABLE ai_user_unlock ADD COLUMN IF NOT EXISTS notes text;
ALTER TABLE ai_user_unlock ADD COLUMN IF NOT EXISTS created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC');
ALTER TABLE ai_user_unlock ADD COLUMN IF NOT EXISTS updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC');
-- The exact limit in nano-USD: the truth Tollgate enforces. NULL = unlimited.
ALTER TABLE ai_user_unlock ADD COLUMN IF NOT EXISTS max_cost_nano bigint;
UPDATE ai_user_unlock
   SET max_cost_nano = round(max_cost_per_month::numeric * 1000000000)
 WHERE max_cost_nano IS NULL AND max_cost_per_month IS NOT NULL;
-- One record per user: enableAIForUser updates it when it exists.
CREATE UNIQUE INDEX IF NOT EXISTS ai_user_unlock_user_id_key ON ai_user_unlock (user_id);

-- Keeps the two limit columns in step whichever one a writer sets: Tollgate sets both; the guide's
-- SQL (and the app) set only max_cost_per_month, and the exact column follows it.
CREATE OR REPLACE FUNCTION tollgate_unlock_sync_limit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.max_cost_nano IS NULL AND NEW.max_cost_per_month IS NOT NULL THEN
            NEW.max_cost_nano := round(NEW.max_cost_per_month::numeric * 1000000000);
        ELSIF NEW.max_cost_nano IS NOT NULL AND NEW.max_cost_per_month IS NULL THEN
            NEW.max_cost_per_month := NEW.max_cost_nano / 1000000000.0;
        END IF;
    ELSIF NEW.max_cost_nano IS NOT DISTINCT FROM OLD.max_cost_nano
          AND NEW.max_cost_per_month IS DISTINCT FROM OLD.max_cost_per_month THEN
        NEW.max_cost_nano := round(NEW.max_cost_per_month::numeric * 1000000000);
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS tollgate_unlock_sync_limit ON ai_user_unlock;
CREATE TRIGGER tollgate_unlock_sync_limit BEFORE INSERT OR UPDATE ON ai_user_unlock
    FOR EACH ROW EXECUTE FUNCTION tollgate_unlock_sync_limit();

-- MARK: ai_usage_log -----------------------------------------------------------------------------
-- A plain ai_usage_log made by the app is renamed aside (with its indexes) and its rows copied into
-- the partitioned table below; the old table is kept as ai_usage_log_legacy for the admin to drop.
DO $$
DECLARE idx record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relname = 'ai_usage_log' AND n.nspname = current_schema() AND c.relkind = 'r') THEN
        ALTER TABLE ai_usage_log RENAME TO ai_usage_log_legacy;
        FOR idx IN SELECT indexname FROM pg_indexes
                    WHERE schemaname = current_schema() AND tablename = 'ai_usage_log_legacy' LOOP
            EXECUTE format('ALTER INDEX %I RENAME TO %I', idx.indexname, left(idx.indexname, 50) || '_legacy');
        END LOOP;
        FOR idx IN SELECT conname FROM pg_constraint
                    WHERE conrelid = 'ai_usage_log_legacy'::regclass AND contype IN ('c', 'f') LOOP
            EXECUTE format('ALTER TABLE ai_usage_log_legacy RENAME CONSTRAINT %I TO %I', idx.conname, left(idx.conname, 50) || '_legacy');
        END LOOP;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS ai_usage_log (
    id                text NOT NULL,
    user_id           text NOT NULL,
    model_id          text NOT NULL,
    prompt_tokens     real NOT NULL DEFAULT 0,
    completion_tokens real NOT NULL DEFAULT 0,
    total_tokens      real NOT NULL DEFAULT 0,
    estimated_cost    real NOT NULL DEFAULT 0,  -- USD (the guide's column); cost_nano is exact
    metadata          text,                     -- JSON text
    created_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),  -- UTC
    cost_nano         bigint NOT NULL,          -- exact cost in nano-USD: the truth for sums
    price_version     text,                     -- pricing version the cost was computed with
    -- A usage event's id and its Redis time travel together, so a replayed event always hits this key.
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE IF NOT EXISTS ai_usage_log_default PARTITION OF ai_usage_log DEFAULT;

-- The guide's troubleshooting: "Ensure indexes exist on user_id and created_at".
CREATE INDEX IF NOT EXISTS ai_usage_log_user_created_idx ON ai_usage_log (user_id, created_at);
CREATE INDEX IF NOT EXISTS ai_usage_log_created_idx ON ai_usage_log (created_at);

-- Rows written by the app itself (without cost_nano) get the exact column from estimated_cost.
CREATE OR REPLACE FUNCTION tollgate_usage_fill_nano() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.cost_nano := ceil(coalesce(NEW.estimated_cost, 0)::numeric * 1000000000);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS tollgate_usage_fill_nano ON ai_usage_log;
CREATE TRIGGER tollgate_usage_fill_nano BEFORE INSERT ON ai_usage_log
    FOR EACH ROW WHEN (NEW.cost_nano IS NULL) EXECUTE FUNCTION tollgate_usage_fill_nano();

-- Creates the partition for the month starting at `month_start` (a first day), moving any rows the
-- default partition holds for it. Returns true when it created one. Safe to call concurrently.
CREATE OR REPLACE FUNCTION tollgate_ensure_usage_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', month_start)::date;
    e date := (date_trunc('month', month_start) + interval '1 month')::date;
    name text := 'ai_usage_log_' || to_char(month_start, 'YYYY_MM');
BEGIN
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tollgate_ensure_usage_partition'));
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE ai_usage_log INCLUDING DEFAULTS)', name);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                   name, name || '_range', m, e);
    EXECUTE format('WITH moved AS (DELETE FROM ai_usage_log_default WHERE created_at >= %L AND created_at < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', m, e, name);
    EXECUTE format('ALTER TABLE ai_usage_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, m, e);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', name, name || '_range');
    RETURN true;
END $$;

-- Copy the app's rows (if a plain table was renamed aside above) into their monthly partitions.
DO $$
DECLARE mon record;
BEGIN
    IF to_regclass('ai_usage_log_legacy') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ai_usage_log LIMIT 1) THEN
        FOR mon IN EXECUTE 'SELECT DISTINCT date_trunc(''month'', created_at)::date AS m FROM ai_usage_log_legacy WHERE created_at IS NOT NULL' LOOP
            PERFORM tollgate_ensure_usage_partition(mon.m);
        END LOOP;
        EXECUTE $q$
            INSERT INTO ai_usage_log (id, user_id, model_id, prompt_tokens, completion_tokens, total_tokens,
                                      estimated_cost, metadata, created_at, cost_nano)
            SELECT id, user_id, coalesce(model_id, 'unknown'), coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0),
                   coalesce(total_tokens, coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)),
                   coalesce(estimated_cost, 0), metadata, coalesce(created_at, 'epoch'::timestamp),
                   ceil(coalesce(estimated_cost, 0)::numeric * 1000000000)
              FROM ai_usage_log_legacy
        $q$;
    END IF;
END $$;
