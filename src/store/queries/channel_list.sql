-- Every configured channel with its shared state, for `GET /v1/channels`: the pause (a 429's or an operator's;
-- shown only while in force) and the configured rate limit. Counts come from stats_live.sql and stats_recent.sql,
-- which are index-backed; nothing here counts messages.
SELECT c.name, c.kind, (c.policy ->> 'rate_per_sec')::double precision AS rate_per_sec,
       CASE WHEN s.paused_until > now() THEN s.paused_until END AS paused_until,
       CASE WHEN s.paused_until > now() THEN s.pause_reason END AS pause_reason
  FROM tidings.channels c
  LEFT JOIN tidings.channel_state s ON s.channel = c.name
 ORDER BY c.name
