-- Benchmark only: (live, sent, final) messages of channel $1. Live rows come from the partial indexes.
SELECT count(*) FILTER (WHERE status IN ('accepted', 'scheduled', 'processing')) AS live,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status NOT IN ('accepted', 'scheduled', 'processing')) AS final
  FROM tidings.messages
 WHERE channel = $1
