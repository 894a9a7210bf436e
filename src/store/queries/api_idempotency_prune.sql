-- Deletes Idempotency-Keys older than 24 h (a range scan of api_idempotency_created); returns how many.
DELETE FROM tidings.api_idempotency WHERE created_at < now() - interval '24 hours'
