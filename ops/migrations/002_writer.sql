-- 002: tables the usage writer fills besides ai_usage_log.

-- One row per limit threshold (80, 90, 100 %) a user crossed in a month.
CREATE TABLE IF NOT EXISTS tollgate_alert (
    id                text PRIMARY KEY,          -- the event id
    user_id           text NOT NULL,
    month             text NOT NULL,             -- YYYY-MM (UTC)
    threshold_percent integer NOT NULL,
    spent_nano        bigint NOT NULL,           -- committed spend when the threshold was crossed
    limit_nano        bigint NOT NULL,
    created_at        timestamp NOT NULL,        -- Redis time, UTC
    UNIQUE (user_id, month, threshold_percent)
);

-- Stream entries that could not be written after several deliveries, kept with the reason.
CREATE TABLE IF NOT EXISTS tollgate_dead_letter (
    stream     text NOT NULL,
    entry_id   text NOT NULL,
    fields     text NOT NULL,                    -- the entry's fields as a JSON object
    reason     text NOT NULL,
    deliveries integer NOT NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (stream, entry_id)
);
