-- A small hot table and a partitioned history (issue 16; the design and its alternatives: docs/history.md).
--
-- tidings.messages and tidings.message_events stay exactly as they were: the claim, the completer, enqueue,
-- receipts, callbacks and fallback chains work on them unchanged. What changes is where a message goes when it can
-- no longer change: the maintenance leader's mover takes finished messages, with their events, out of the hot
-- tables (DELETE ... RETURNING, in one statement per batch) and into tidings.message_history and
-- tidings.message_event_history, which are range-partitioned by day of creation (the message id is a UUIDv7, so
-- "created on day D" is an id range, and a message and all of its events land in the same day's partitions).
-- Retention is then dropping a day's two partitions, never a DELETE of millions of rows.
--
-- Readers see one table: the views tidings.messages_all and tidings.message_events_all (hot UNION ALL history;
-- predicates and ORDER BY id ... LIMIT are pushed into both branches, and a lookup by id prunes the history to
-- one partition). tidings.status, tidings.events, the API and the dashboard read through them.
--
-- What stays hot (see history_move.sql): a message that is live; one that finished less than
-- `[worker] history_after` ago (default 24 h: receipts, operator retries and the reference's idempotency window); a
-- retryable failure (sending_failed, rejected, expired) until its validity has passed; any message of a fallback
-- chain that still has a live message. A late receipt for a message already in history brings it back to the hot
-- table first (tidings.history_restore), so the receipt's transition runs every trigger (callbacks) as usual.
--
-- Partitions are created ahead by the leader (tidings.history_partitions) and dropped once their day is older
-- than the retention and no message created that day is still in the hot table (a message scheduled 35 days
-- ahead keeps its day until it finishes). Plain PL/pgSQL, not pg_partman: it runs on any PostgreSQL >= 13 with
-- no extension (managed services included), and the drop needs that hot-table guard, which pg_partman's retention
-- does not know about.

-- The smallest UUIDv7 of `at`'s millisecond: every id generated at or after `at` is >= it, every id generated
-- before is < it (ids compare bytewise, and their first 48 bits are the Unix milliseconds).
CREATE FUNCTION tidings.uuid_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || '70008000000000000000')::uuid
$$;

-- Same columns, same order, as the hot tables (the mover inserts `SELECT *` of what it deleted). A later
-- migration that adds a column to tidings.messages or tidings.message_events adds it here too; a test
-- (history::columns_match_the_hot_tables) fails otherwise.
CREATE TABLE tidings.message_history (LIKE tidings.messages INCLUDING DEFAULTS) PARTITION BY RANGE (id);
CREATE TABLE tidings.message_event_history (LIKE tidings.message_events) PARTITION BY RANGE (message_id);

ALTER TABLE tidings.message_history ADD PRIMARY KEY (id);
ALTER TABLE tidings.message_event_history ADD PRIMARY KEY (message_id, id);

-- The history's indexes serve the readers only (it is written once per message, by the mover): the list's
-- filters and the receipt's match. The recipient is indexed on the table itself here (the hot table keeps its
-- insert-only side table, tidings.message_recipients, because an index on messages costs on every status change;
-- a history row never changes).
CREATE INDEX message_history_reference ON tidings.message_history (channel, reference) WHERE reference IS NOT NULL;
CREATE INDEX message_history_provider_id ON tidings.message_history (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX message_history_recipient ON tidings.message_history ((left(recipient ->> 'phone', 64) COLLATE "C"))
    WHERE recipient ? 'phone';
CREATE INDEX message_history_tags ON tidings.message_history USING gin (tags) WHERE cardinality(tags) > 0;
CREATE INDEX message_history_failed ON tidings.message_history (id)
    WHERE status IN ('sending_failed', 'rejected', 'expired', 'delivery_failed', 'canceled');
CREATE INDEX message_history_chain ON tidings.message_history (chain_id) WHERE chain_id IS NOT NULL;

-- One table for readers (the columns as of this migration: a migration that adds one recreates the views).
CREATE VIEW tidings.messages_all AS
    SELECT m.* FROM tidings.messages m
    UNION ALL
    SELECT h.* FROM tidings.message_history h;

CREATE VIEW tidings.message_events_all AS
    SELECT e.* FROM tidings.message_events e
    UNION ALL
    SELECT h.* FROM tidings.message_event_history h;

-- The name of day `d`'s partition of `parent`.
CREATE FUNCTION tidings.history_partition_name(parent text, d date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT parent || '_p' || to_char(d, 'YYYYMMDD') $$;

-- Creates the missing day partitions from the oldest hot message's day (what the mover may need; or `since`, when
-- earlier) up to `ahead` days after today, and drops the days older than `retention` that no hot message still belongs to.
-- Returns one row per partition day created or dropped. Runs on the maintenance leader, with a short lock
-- timeout: a partition is added or dropped under a brief exclusive lock on the parent, and this must never wait
-- behind (and so hold up) the readers; a pass that cannot take the lock leaves the work to the next one.
-- SECURITY DEFINER: the workers' role adds and drops partitions without owning the tables.
CREATE FUNCTION tidings.history_partitions(retention interval, ahead integer DEFAULT 3, since date DEFAULT NULL)
RETURNS TABLE (action text, day date)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    first_day date;
    d date;
    t text;
    keep_from date := ((now() - retention) AT TIME ZONE 'UTC')::date;
BEGIN
    PERFORM set_config('lock_timeout', '2s', true);
    -- The oldest hot message (primary key: its first entry) decides how far back partitions must exist.
    SELECT least((to_timestamp(('x' || substr(replace(m.id::text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0)
                  AT TIME ZONE 'UTC')::date, today)
      INTO first_day
      FROM tidings.messages m ORDER BY m.id LIMIT 1;
    first_day := least(coalesce(first_day, today), today, coalesce(since, today));
    d := first_day;
    WHILE d <= today + ahead LOOP
        FOREACH t IN ARRAY ARRAY['message_history', 'message_event_history'] LOOP
            IF to_regclass('tidings.' || tidings.history_partition_name(t, d)) IS NULL THEN
                EXECUTE format('CREATE TABLE tidings.%I PARTITION OF tidings.%I FOR VALUES FROM (%L) TO (%L)',
                               tidings.history_partition_name(t, d), t,
                               tidings.uuid_floor(d::timestamp AT TIME ZONE 'UTC'),
                               tidings.uuid_floor((d + 1)::timestamp AT TIME ZONE 'UTC'));
                IF t = 'message_history' THEN
                    action := 'created'; day := d; RETURN NEXT;
                END IF;
            END IF;
        END LOOP;
        d := d + 1;
    END LOOP;
    -- Retention: whole days, oldest first, each only while no hot message was created on it or before.
    FOR d IN
        SELECT to_date(substr(c.relname, length('message_history_p') + 1), 'YYYYMMDD') AS pd
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'tidings.message_history'::regclass
         ORDER BY 1
    LOOP
        EXIT WHEN d >= keep_from;
        EXIT WHEN EXISTS (SELECT 1 FROM tidings.messages m
                           WHERE m.id < tidings.uuid_floor((d + 1)::timestamp AT TIME ZONE 'UTC'));
        EXECUTE format('DROP TABLE IF EXISTS tidings.%I, tidings.%I',
                       tidings.history_partition_name('message_history', d),
                       tidings.history_partition_name('message_event_history', d));
        action := 'dropped'; day := d; RETURN NEXT;
    END LOOP;
END $$;

-- Brings messages back from the history into the hot table, with nothing else changed (their events stay where
-- they are: readers see both sides), so that a late change (a delivery receipt) runs on the hot table with every
-- trigger. The mover takes them again once they are done. Returns the ids brought back. A message whose
-- `reference` a newer hot message of its channel has taken since (the reference's window had passed) stays in the
-- history: the hot table's unique index could not hold both.
CREATE FUNCTION tidings.history_restore(ids uuid[]) RETURNS SETOF uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH back AS (
        DELETE FROM tidings.message_history h
         WHERE h.id = ANY (ids)
           AND NOT EXISTS (SELECT 1 FROM tidings.messages m WHERE m.channel = h.channel AND m.reference = h.reference)
        RETURNING h.*
    )
    INSERT INTO tidings.messages SELECT * FROM back RETURNING id
$$;

-- The readers of the SQL API, across both sides. Same signatures as 0012: CREATE OR REPLACE keeps the grants.
CREATE OR REPLACE FUNCTION tidings.chain_of(chain uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_agg(jsonb_build_object('id', c.id, 'channel', c.channel, 'status', c.status,
                                        'step', coalesce(c.chain_step, 0), 'trigger', c.chain_trigger)
                     ORDER BY coalesce(c.chain_step, 0))
      FROM tidings.messages_all c
     WHERE c.chain_id = chain
$$;

-- PL/pgSQL rather than SQL, with generic plans: its statements' plans are then made once per session, where a SQL
-- function's body is planned again on every call, and planning over the history's partitions (about 5 ms with a
-- week of days) costs far more than running the lookup (an index probe; the other days are pruned as it runs,
-- or probed by index in a few microseconds each). JIT off: the estimates over every partition can pass JIT's cost
-- threshold, and compiling takes tens of milliseconds for a lookup of three rows.
CREATE OR REPLACE FUNCTION tidings.status(message_id uuid)
RETURNS TABLE (id uuid, channel text, status tidings.message_status, attempts integer, run_at timestamptz,
               expires_at timestamptz, provider_message_id text, last_error text, created_at timestamptz,
               updated_at timestamptz, chain_id uuid, chain jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    RETURN QUERY
    SELECT m.id, m.channel, m.status, m.attempts, m.run_at, m.expires_at, m.provider_message_id, m.last_error,
           m.created_at, m.updated_at, m.chain_id,
           CASE WHEN m.chain_id IS NOT NULL THEN tidings.chain_of(m.chain_id) END
      FROM tidings.messages_all m WHERE m.id = status.message_id;
END $$;

-- The ids to read are found first (the message, or every message of its chain), then the events of each id in turn
-- (a lateral join: each probe prunes the history to its id's day; `message_id = ANY (ids)` under a generic plan is
-- estimated at thousands of rows and planned as a parallel scan).
CREATE OR REPLACE FUNCTION tidings.events(message_id uuid)
RETURNS TABLE (at timestamptz, status tidings.message_status, reason text, attempt integer, started_at timestamptz,
               detail jsonb, message uuid, channel text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    ids uuid[];
BEGIN
    SELECT array_agg(c.id) INTO ids
      FROM tidings.messages_all m
      JOIN tidings.messages_all c ON c.chain_id = m.chain_id
     WHERE m.id = events.message_id AND m.chain_id IS NOT NULL;
    ids := coalesce(ids, ARRAY[events.message_id]);
    RETURN QUERY
    SELECT e.at, e.status, e.reason, e.attempt, e.started_at, e.detail, e.message_id,
           (SELECT m.channel FROM tidings.messages_all m WHERE m.id = e.message_id)
      FROM unnest(ids) AS i(id)
     CROSS JOIN LATERAL (SELECT * FROM tidings.message_events_all x WHERE x.message_id = i.id) e
     ORDER BY e.id;
END $$;

-- The partitions the history needs now (for the messages already in the hot table, however old).
SELECT count(*) FROM tidings.history_partitions(interval '100 years');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON tidings.message_history, tidings.message_event_history
            TO tidings_worker;
        GRANT SELECT ON tidings.messages_all, tidings.message_events_all TO tidings_worker;
        GRANT EXECUTE ON FUNCTION tidings.history_partitions(interval, integer, date) TO tidings_worker;
        GRANT EXECUTE ON FUNCTION tidings.history_restore(uuid[]) TO tidings_worker;
        GRANT EXECUTE ON FUNCTION tidings.uuid_floor(timestamptz) TO tidings_worker;
    END IF;
END $$;
