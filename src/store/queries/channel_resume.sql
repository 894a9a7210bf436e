-- Ends any pause of channel $1 (a 429's or an operator's) and wakes the workers. Returns the channel when it exists.
WITH c AS (
    SELECT name FROM tidings.channels WHERE name = $1
), resumed AS (
    UPDATE tidings.channel_state s SET paused_until = NULL, pause_reason = NULL FROM c WHERE s.channel = c.name
), wake AS (
    SELECT pg_notify('tidings', '') FROM c
)
SELECT name FROM c, (SELECT count(*) FROM wake) w
