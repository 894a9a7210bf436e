-- The fallback chain of message $1, in step order (through the partial indexes messages_chain and
-- message_history_chain), hot or in history; no rows outside a chain.
SELECT c.chain_id, c.id, c.channel, c.status::text AS status, coalesce(c.chain_step, 0)::smallint AS step,
       c.chain_trigger AS trigger
  FROM tidings.messages_all m
  JOIN tidings.messages_all c ON c.chain_id = m.chain_id
 WHERE m.id = $1 AND m.chain_id IS NOT NULL
 ORDER BY coalesce(c.chain_step, 0)
