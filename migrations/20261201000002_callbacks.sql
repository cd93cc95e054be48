-- Callback delivery state, kept on the call's row so the recorder sets it in the same write
-- that records the final outcome (a final call with a callback URL is never without one).
ALTER TABLE invocations
    ADD COLUMN traceparent text,
    ADD COLUMN callback_host text,
    ADD COLUMN callback_state text
        CHECK (callback_state IN ('pending', 'retrying', 'delivered', 'failed')),
    -- Attempts in the current round (a redelivery starts a new round), and when it began:
    -- the retry policy's attempts and max_age count from there.
    ADD COLUMN callback_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN callback_round_at timestamptz,
    ADD COLUMN callback_next_at timestamptz,
    -- The dispatcher holding the callback, and until when; another may take it after that.
    -- An outcome is only applied by the holder of the lease it was attempted under.
    ADD COLUMN callback_lease uuid,
    ADD COLUMN callback_lease_until timestamptz;

CREATE INDEX invocations_callbacks_due ON invocations (callback_next_at)
    WHERE callback_state IN ('pending', 'retrying');

-- Every delivery attempt, for the delivery log.
CREATE TABLE callback_attempts (
    id               bigserial PRIMARY KEY,
    call_id          uuid NOT NULL,
    at               timestamptz NOT NULL,
    url              text NOT NULL,
    webhook_id       text NOT NULL,
    status_code      integer,
    error            text,
    duration_seconds double precision NOT NULL,
    -- What the attempt led to: delivered, retrying (with the next time) or failed.
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    next_attempt_at  timestamptz
);

CREATE INDEX callback_attempts_call ON callback_attempts (call_id, id);
