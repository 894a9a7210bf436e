-- One message by id for `GET /v1/messages/{id}`, hot or in history: the columns of message_list.sql plus the
-- content.
SELECT id, channel, status::text AS status, use_case, priority, recipient, tags, reference, attempts, max_attempts,
       provider_message_id, last_error, scheduled_for, run_at, expires_at, created_at, updated_at, content
  FROM tidings.messages_all
 WHERE id = $1
