-- The outbox gauges: pending callbacks, and seconds since the transition of the oldest pending one (0 when none).
-- Reads only pending rows (the callback_outbox_due partial index).
SELECT count(*)::bigint,
       coalesce(extract(epoch FROM now() - min(at)), 0)::float8
  FROM tidings.callback_outbox
 WHERE delivered_at IS NULL
   AND given_up_at IS NULL
