-- Benchmark only: when the attempt that sent each message of $1 started (claim time), by message id.
SELECT e.message_id, e.started_at
  FROM tidings.message_events e
 WHERE e.message_id = ANY ($1::uuid[]) AND e.status = 'sent'
