-- One row per accepted call: the recorder's projection of the invocation stream.
CREATE TABLE invocations (
    call_id          uuid PRIMARY KEY,
    function         text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    method           text,
    path             text,
    query            text,
    callback_url     text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    duration_seconds double precision,
    function_status  integer,
    error            text,
    -- Stream sequence of the invocation message, and of the outcome event that made the call
    -- final (the recorder compares it to tell whether its event was the first final one).
    stream_seq       bigint,
    final_seq        bigint,
    -- The function's response, once final.
    result_headers   jsonb,
    result_body      bytea
);

CREATE INDEX invocations_newest ON invocations (created_at DESC, call_id DESC);
CREATE INDEX invocations_function_newest ON invocations (function, created_at DESC, call_id DESC);
CREATE INDEX invocations_status_newest ON invocations (status, created_at DESC, call_id DESC);
