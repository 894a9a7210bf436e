-- Benchmark only: $1 finished messages straight into the history (channel $2), created evenly over the $3 days
-- before now (the partitions must exist: tidings.history_partitions with `since`), each with three events
-- (enqueued, sent, delivered), as the mover would have left them.
WITH m AS (
    INSERT INTO tidings.message_history (id, channel, recipient, content, use_case, status, run_at, expires_at,
                                         max_attempts, attempts, provider_message_id, created_at, updated_at)
    SELECT tidings.uuid_v7(t), $2, jsonb_build_object('phone', '+3161' || lpad((i % 10000000)::text, 7, '0')),
           '{"type": "text", "text": {"text": "Your code is 123456"}}', 'transactional', 'delivered',
           t, t + interval '36 hours', 10, 1, 'h-' || i, t, t + interval '3 seconds'
      FROM generate_series(1, $1::bigint) i,
           LATERAL (SELECT now() - make_interval(days => $3) + i * make_interval(days => $3) / ($1 + 1) AS t) x
    RETURNING id, created_at
)
INSERT INTO tidings.message_event_history (id, message_id, at, status, reason, attempt)
SELECT nextval(pg_get_serial_sequence('tidings.message_events', 'id')), m.id, m.created_at + (k - 1) * interval '1 second',
       (ARRAY['accepted', 'sent', 'delivered']::tidings.message_status[])[k],
       (ARRAY['enqueued', 'provider_accepted', 'receipt_delivered'])[k], k - 1
  FROM m, generate_series(1, 3) k
