-- Hand back up to $1 messages whose lease expired (their worker died or hung): the lost attempt counts.
-- Back to 'accepted' when attempts remain and validity does; otherwise 'sending_failed' / 'expired'.
-- SKIP LOCKED so several workers' rescuers never block each other or a completer.
WITH stale AS (
    SELECT id
      FROM tidings.messages
     WHERE locked_until < now() AND status = 'processing'
     ORDER BY locked_until
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE tidings.messages m
       SET status = CASE WHEN m.expires_at <= now() THEN 'expired'
                         WHEN m.attempts + 1 >= m.max_attempts THEN 'sending_failed'
                         ELSE 'accepted' END::tidings.message_status,
           attempts = m.attempts + 1,
           run_at = now(),
           last_error = 'lease_expired',
           lease_id = NULL,
           locked_until = NULL,
           updated_at = now()
     WHERE m.id = ANY (ARRAY(SELECT id FROM stale)) -- primary-key lookups whatever the plan's row guess
    RETURNING m.id, m.status, m.attempts
)
INSERT INTO tidings.message_events (message_id, status, reason, attempt, detail)
SELECT id, status,
       CASE status WHEN 'expired' THEN 'validity_passed'
                   WHEN 'sending_failed' THEN 'attempts_exhausted'
                   ELSE 'lease_expired' END,
       attempts, '{"cause": "lease_expired"}'::jsonb
  FROM rescued
