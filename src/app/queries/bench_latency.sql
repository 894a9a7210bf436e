-- Benchmark only: p50 and p99, in milliseconds, of enqueue (created_at) -> sent event, over channel $1.
SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0)::double precision,
       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)::double precision
  FROM (SELECT extract(epoch FROM e.at - m.created_at) * 1000 AS ms
          FROM tidings.message_events e
          JOIN tidings.messages m ON m.id = e.message_id
         WHERE m.channel = $1 AND e.status = 'sent') x
