-- Queue depth of every function, sampled by the control process every few seconds (several
-- control processes write each sample once), for the dashboard's charts. Kept for a day.
CREATE TABLE queue_samples (
    function  text NOT NULL,
    at        timestamptz NOT NULL,
    pending   bigint NOT NULL,
    in_flight bigint NOT NULL,
    PRIMARY KEY (function, at)
);

CREATE INDEX queue_samples_at ON queue_samples (at);

-- The dashboard's figures over the last minutes: calls finished per function, and the
-- callbacks that are failing.
CREATE INDEX invocations_function_finished ON invocations (function, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX invocations_callbacks_failing ON invocations (function)
    WHERE callback_state IN ('retrying', 'failed');
