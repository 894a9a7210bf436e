-- The fallback chain of message $1, in step order (through the partial index messages_chain); no rows outside a
-- chain.
SELECT c.chain_id, c.id, c.channel, c.status::text AS status, coalesce(c.chain_step, 0)::smallint AS step,
       c.chain_trigger AS trigger
  FROM tidings.messages m
  JOIN tidings.messages c ON c.chain_id = m.chain_id
 WHERE m.id = $1 AND m.chain_id IS NOT NULL
 ORDER BY coalesce(c.chain_step, 0)
