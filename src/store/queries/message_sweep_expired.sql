-- Expire up to $1 waiting messages whose validity has passed, even when no worker would claim them (paused or
-- unserved channel), so stats never show stale live messages. It reads messages_expiry (waiting messages by
-- expires_at, migration 0015): only the overdue rows, whatever the backlog.
WITH overdue AS (
    SELECT id
      FROM tidings.messages
     WHERE status IN ('accepted', 'scheduled') AND expires_at <= now()
     ORDER BY expires_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE tidings.messages m
       SET status = 'expired', updated_at = now()
     WHERE m.id = ANY (ARRAY(SELECT id FROM overdue))
    RETURNING m.id, m.attempts, m.expires_at
)
INSERT INTO tidings.message_events (message_id, status, reason, attempt, detail)
SELECT id, 'expired', 'validity_passed', attempts, jsonb_build_object('expires_at', expires_at)
  FROM expired
