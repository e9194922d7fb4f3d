-- 004: edits to ai_user_unlock made anywhere (the guide's SQL, the app) reach Redis at once.
-- Every change sends a notification on channel `tollgate_unlock` (payload: the user id); `tollgate serve`
-- and `tollgate writer` LISTEN and apply the row through the same set-unlock script the API uses.
-- updated_at only moves forward, so it is a version: an older change never overwrites a newer one.
-- Deleted rows leave a tombstone, so a listener that was away can still learn of the deletion.

CREATE TABLE IF NOT EXISTS tollgate_unlock_tombstone (
    user_id    text PRIMARY KEY,
    deleted_at timestamp NOT NULL   -- UTC; its microseconds are the deletion's version
);

CREATE OR REPLACE FUNCTION tollgate_unlock_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := greatest(coalesce(NEW.updated_at, clock_timestamp() AT TIME ZONE 'UTC'),
                                   clock_timestamp() AT TIME ZONE 'UTC',
                                   OLD.updated_at + interval '1 microsecond');
    ELSE
        NEW.updated_at := coalesce(NEW.updated_at, clock_timestamp() AT TIME ZONE 'UTC');
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS tollgate_unlock_version ON ai_user_unlock;
CREATE TRIGGER tollgate_unlock_version BEFORE INSERT OR UPDATE ON ai_user_unlock
    FOR EACH ROW EXECUTE FUNCTION tollgate_unlock_version();

CREATE OR REPLACE FUNCTION tollgate_unlock_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO tollgate_unlock_tombstone (user_id, deleted_at)
        VALUES (OLD.user_id, greatest(clock_timestamp() AT TIME ZONE 'UTC', OLD.updated_at + interval '1 microsecond'))
        ON CONFLICT (user_id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at;
        PERFORM pg_notify('tollgate_unlock', OLD.user_id);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.user_id IS DISTINCT FROM OLD.user_id THEN
        PERFORM pg_notify('tollgate_unlock', OLD.user_id);
    END IF;
    PERFORM pg_notify('tollgate_unlock', NEW.user_id);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS tollgate_unlock_notify ON ai_user_unlock;
CREATE TRIGGER tollgate_unlock_notify AFTER INSERT OR UPDATE OR DELETE ON ai_user_unlock
    FOR EACH ROW EXECUTE FUNCTION tollgate_unlock_notify();
