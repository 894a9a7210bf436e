-- Benchmark only: forget the rows of earlier runs on the benchmark channels ($1), events first.
WITH gone AS (
    DELETE FROM tidings.messages WHERE channel = ANY ($1::text[]) RETURNING id
)
DELETE FROM tidings.message_events e USING gone WHERE e.message_id = gone.id
