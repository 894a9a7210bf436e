-- tidings schema: messages, their event history, channels and shared channel state.
-- Forward-only. Every later change is a new numbered file; never edit a shipped migration.

CREATE SCHEMA IF NOT EXISTS tidings;

CREATE TYPE tidings.status AS ENUM (
    'accepted',        -- due, waiting for a worker
    'scheduled',       -- waiting for run_at (future scheduled_for, quiet hours, retry backoff, 429 pause)
    'processing',      -- claimed, lease held
    'sent',            -- provider accepted
    'delivered',       -- provider receipt: delivered
    'delivery_failed', -- provider receipt: not delivered
    'sending_failed',  -- permanent error or attempts exhausted
    'rejected',        -- policy refused
    'expired',         -- validity passed before it could be sent
    'canceled'         -- canceled by the producer
);

-- Channels are synced from the config file by `tidings migrate` and at worker start.
-- `policy` holds only non-secret settings; credentials stay in the environment.
CREATE TABLE tidings.channels (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind       text NOT NULL,
    policy     jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- State shared by every worker on every host: the 429 pause and the rate-limit bucket.
CREATE TABLE tidings.channel_state (
    channel      text PRIMARY KEY REFERENCES tidings.channels (name) ON DELETE CASCADE,
    paused_until timestamptz,
    pause_reason text,
    tokens       double precision NOT NULL DEFAULT 0,
    refilled_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tidings.messages (
    id                  uuid PRIMARY KEY,              -- UUIDv7; also the provider idempotency key
    channel             text NOT NULL,
    recipient           jsonb NOT NULL,
    content             jsonb NOT NULL,
    use_case            text NOT NULL,
    status              tidings.status NOT NULL,
    priority            smallint NOT NULL DEFAULT 0,  -- 0 runs first, 9 last
    scheduled_for       timestamptz,
    run_at              timestamptz NOT NULL,          -- next moment it may be claimed
    expires_at          timestamptz NOT NULL,          -- never handed to a provider after this
    ignore_quiet_hours  boolean NOT NULL DEFAULT false,
    cap_frequency       boolean NOT NULL DEFAULT false,
    tags                text[] NOT NULL DEFAULT '{}',
    reference           text,                          -- producer idempotency key, unique per channel
    attempts            integer NOT NULL DEFAULT 0,    -- attempts spent (deferrals and 429s spend none)
    max_attempts        integer NOT NULL,
    lease_id            uuid,
    locked_until        timestamptz,
    provider_message_id text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
) WITH (
    -- Every message is updated at least twice; leave room on the page for the new versions.
    fillfactor = 80,
    -- The table churns constantly: vacuum early and without throttling so the claim index stays small.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim: partial over claimable statuses, in the claim's ORDER BY order, so it only holds the live backlog.
CREATE INDEX messages_claim ON tidings.messages (priority, run_at) WHERE status IN ('accepted', 'scheduled');
-- The rescuer: only leased rows (exactly the processing ones: every other status clears locked_until).
-- Keyed on `locked_until IS NOT NULL` rather than `status = 'processing'` on purpose: the completion statement
-- filters on status = 'processing', and with a status predicate the planner (whose statistics rarely see
-- processing rows) would join a batch of outcomes against this index, rescanning it per outcome -- measured at
-- 374 ms per 1000-row batch instead of a few ms through the primary key.
CREATE INDEX messages_lease ON tidings.messages (locked_until) WHERE locked_until IS NOT NULL;
-- Producer idempotency and receipt matching by reference.
CREATE UNIQUE INDEX messages_reference ON tidings.messages (channel, reference) WHERE reference IS NOT NULL;
-- Receipt matching by the provider's id.
CREATE INDEX messages_provider_id ON tidings.messages (provider_message_id) WHERE provider_message_id IS NOT NULL;
-- The pruner walks the primary key: UUIDv7 ids are ordered by creation time, so no extra index is needed.

-- One row per status change, written in the same transaction as the change.
-- No foreign key: the pruner deletes a message and its events together, and an FK check per event costs on the
-- hot path.
CREATE TABLE tidings.message_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id uuid NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    status     tidings.status NOT NULL,
    reason     text NOT NULL,
    attempt    integer,
    started_at timestamptz,   -- when the attempt that led to this row began (the claim writes no row itself)
    detail     jsonb
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX message_events_message ON tidings.message_events (message_id, id);

-- Opt-out list: checked at dispatch, so a STOP that arrives after scheduling still wins.
CREATE TABLE tidings.suppressions (
    channel_kind text NOT NULL,
    recipient    text NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_kind, recipient)
);

-- Time-ordered UUID (version 7): 48 bits of Unix milliseconds, then random bits.
-- PostgreSQL 15 has no uuidv7(); this builds one from gen_random_uuid() (version bits 0100 -> 0111).
CREATE FUNCTION tidings.uuid_v7(at timestamptz DEFAULT clock_timestamp()) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
