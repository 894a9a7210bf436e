-- Benchmark only: live messages of channel $1, polled while draining. Two branches matching the partial indexes
-- (messages_claim, messages_lease), so it never scans the history. Every benchmark message is due at once, so
-- only the due part of the claim index is read (not the future-scheduled rows of --scheduled-rows).
SELECT (SELECT count(*) FROM tidings.messages
         WHERE channel = $1 AND status IN ('accepted', 'scheduled') AND run_at <= now())
     + (SELECT count(*) FROM tidings.messages WHERE channel = $1 AND locked_until IS NOT NULL)
