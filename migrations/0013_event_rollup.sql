-- Counts that stay cheap on a long history (issues 14 and 15: "counts by estimate or a maintained rollup, never
-- count(*) over the table on a page load"; the overview in <= 300 ms with 10 million messages).
--
-- tidings.event_minutes holds, per minute, channel and status, how many status changes happened: the dashboard's
-- chart and the "last 24 h" counts of /v1/stats and /v1/channels read it instead of the event history. It is
-- written off the hot path by the workers' maintenance (one process at a time: the state row is taken FOR UPDATE
-- SKIP LOCKED), never by the completer, so sending pays nothing for it. Readers add the few minutes after
-- `done_before` from the events themselves, so the counts are current to the second.
--
-- Late commits: an event's `at` is its transaction's start, so a transaction that commits long after it began
-- (a producer's enqueue in a long transaction) writes into a minute that may already be rolled up. Each pass
-- therefore recounts the last five rolled-up minutes; changes committed more than five minutes after their
-- transaction began are missing from the chart (never from the messages or their events).
CREATE TABLE tidings.event_minutes (
    minute  timestamptz NOT NULL,
    channel text NOT NULL,
    status  tidings.message_status NOT NULL,
    -- The enqueue's own event (reason 'enqueued'), apart from later moves to the same status (a deferral is a
    -- move back to 'scheduled').
    enqueue boolean NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (minute, channel, status, enqueue)
);

-- Minutes before done_before are in tidings.event_minutes. A fresh install starts 25 hours back, so the first
-- passes (an hour of history each) fill the last day's chart from the events already there.
CREATE TABLE tidings.event_rollup_state (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    done_before timestamptz NOT NULL
);
INSERT INTO tidings.event_rollup_state (done_before) VALUES (date_trunc('minute', now() - interval '25 hours'));

-- The rollup passes and the readers' recent minutes select events by time. BRIN: events are appended in time
-- order, so a block range summary per 128 pages is a few kilobytes for a billion rows and costs the completer's
-- inserts next to nothing (measured: see the README).
CREATE INDEX message_events_at ON tidings.message_events USING brin (at);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        GRANT SELECT, INSERT, DELETE ON tidings.event_minutes TO tidings_worker;
        GRANT SELECT, UPDATE ON tidings.event_rollup_state TO tidings_worker;
    END IF;
END $$;

-- Live counts on a very large backlog (issue 15: "exact while small; on very large tables estimates, marked ≈").
-- Counting the waiting messages reads each one (a million take about 0.2 s); past a cap the API answers the
-- estimate ANALYZE keeps anyway: a multivariate most-common-values list over (channel, status), whose frequencies
-- times the table's row count are the planner's own estimates, correct for correlated columns (a channel whose
-- messages are mostly scheduled), and as fresh as the last (auto)analyze.
CREATE STATISTICS tidings.messages_channel_status (mcv) ON channel, status FROM tidings.messages;

-- SECURITY DEFINER: the statistics' values are readable by their owner only (they are a sample of the data).
-- Returns the live statuses only, by channel.
CREATE FUNCTION tidings.live_estimate()
RETURNS TABLE (channel text, status text, n bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.values[1], i.values[2], round(i.frequency * greatest(c.reltuples, 0))::bigint
      FROM pg_statistic_ext s
      JOIN pg_statistic_ext_data d ON d.stxoid = s.oid
      JOIN pg_class c ON c.oid = s.stxrelid
     CROSS JOIN LATERAL pg_mcv_list_items(d.stxdmcv) i
     WHERE s.stxname = 'messages_channel_status'
       AND s.stxnamespace = 'tidings'::regnamespace
       AND i.values[2] IN ('accepted', 'scheduled', 'processing')
$$;
REVOKE ALL ON FUNCTION tidings.live_estimate() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        GRANT EXECUTE ON FUNCTION tidings.live_estimate() TO tidings_worker;
    END IF;
END $$;
