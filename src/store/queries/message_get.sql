-- One message, for `tidings status ID` (operators' view: includes recipient and content), hot or in history.
SELECT id, channel, status::text AS status, use_case, priority, recipient, content, scheduled_for, run_at,
       expires_at, attempts, max_attempts, reference, provider_message_id, last_error, tags, created_at, updated_at
  FROM tidings.messages_all
 WHERE id = $1
