-- Benchmark only: an empty bulk enqueue, so this connection has planned enqueue_many, as a running producer's has.
SELECT count(*) FROM tidings.enqueue_many('[]'::jsonb)
