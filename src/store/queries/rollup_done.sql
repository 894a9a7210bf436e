-- Ends a rollup pass: minutes before $1 are counted (never moving back, should the clock have); counts older than
-- $2 seconds go.
WITH old AS (
    DELETE FROM tidings.event_minutes WHERE minute < now() - make_interval(secs => $2::double precision)
)
UPDATE tidings.event_rollup_state SET done_before = greatest(done_before, $1)
