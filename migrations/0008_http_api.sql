-- The HTTP API (`tidings serve`): stored answers for `Idempotency-Key`, and the indexes its list filters need.

-- One row per (token, Idempotency-Key) seen in the last 24 h. The row is inserted, in the same transaction as the
-- messages, before they are enqueued: a concurrent request with the same key waits on the primary key until this
-- transaction ends, then finds the answer (or, after a rollback, takes the key itself). `body_hash` is the
-- SHA-256 of the route and the raw body; `ids` is what the first call answered, in input order.
CREATE TABLE tidings.api_idempotency (
    token_name text NOT NULL,
    idem_key   text NOT NULL,
    body_hash  bytea NOT NULL,
    ids        uuid[],
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_name, idem_key)
);
-- The hourly clean-up of keys older than 24 h.
CREATE INDEX api_idempotency_created ON tidings.api_idempotency (created_at);

-- List filters. Every index on tidings.messages costs an insertion per status change (the claim and the completion
-- change indexed columns, so no update is HOT), so only filters a keyset walk of the primary key (newest first,
-- UUIDv7) cannot serve are indexed, and partially where that keeps the hot path out: common statuses, channels,
-- use cases and time ranges walk the primary key; reference uses messages_reference.
-- * recipient: the question "what happened to the message for +31…". A btree over the phone number only (not
--   tidings.recipient_key, whose regex would run for every row version the drain writes), cut to 64 characters so
--   no recipient (up to 4 KiB) can exceed a btree row, and partial over recipients that have a phone.
CREATE INDEX messages_recipient ON tidings.messages (left(recipient ->> 'phone', 64)) WHERE recipient ? 'phone';
-- * tag: partial, so the (many) untagged messages cost nothing.
CREATE INDEX messages_tags ON tidings.messages USING gin (tags) WHERE cardinality(tags) > 0;
-- * failures: operators look for the rare failed messages among millions sent (on 1M rows, status=sending_failed
--   at 0.1% walked the primary key for 41 ms, a status with no row for 695 ms). Partial over the failure statuses
--   only, so a message that is sent and delivered never enters it; message_list.sql repeats the predicate when
--   every requested status is one of these.
CREATE INDEX messages_failed ON tidings.messages (id)
    WHERE status IN ('sending_failed', 'rejected', 'expired', 'delivery_failed', 'canceled');
