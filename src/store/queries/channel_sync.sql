-- Upsert one channel from the config file (kind and non-secret policy; never credentials).
INSERT INTO tidings.channels AS c (name, kind, policy, updated_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (name) DO UPDATE
   SET kind = excluded.kind, policy = excluded.policy, updated_at = now()
 WHERE (c.kind, c.policy) IS DISTINCT FROM (excluded.kind, excluded.policy)
