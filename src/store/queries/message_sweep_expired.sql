-- Expire up to $1 waiting messages whose validity has passed, even when no worker would claim them (paused or
-- unserved channel), so stats never show stale live messages. A waiting message's run_at is never after its
-- expires_at, so only due rows can be expired: the scan stays inside the claim index's due range.
WITH overdue AS (
    SELECT id
      FROM tidings.messages
     WHERE status IN ('accepted', 'scheduled') AND run_at <= now() AND expires_at <= now()
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
