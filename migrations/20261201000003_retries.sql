-- Retries after a backoff and dead letters.
ALTER TABLE invocations
    -- When a call waiting out a retry backoff (status queued) runs again.
    ADD COLUMN next_attempt_at timestamptz,
    -- How many times the call was re-driven from the dead letters.
    ADD COLUMN redrives integer NOT NULL DEFAULT 0;

-- The request of every dead call, so it can be re-driven with fresh attempts. A redrive
-- removes the row; the call dying again writes it anew.
CREATE TABLE dead_letters (
    call_id  uuid PRIMARY KEY,
    function text NOT NULL,
    meta     jsonb NOT NULL,
    body     bytea NOT NULL,
    dead_at  timestamptz NOT NULL
);

CREATE INDEX dead_letters_function ON dead_letters (function, call_id);
