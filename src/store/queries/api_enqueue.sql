-- Enqueue for the HTTP API: the same tidings.enqueue_many every producer calls (one validation path), given the
-- request's JSON array as text so PostgreSQL parses it once and numbers reach the provider exactly as written.
SELECT tidings.enqueue_many($1::text::jsonb)
