-- Live messages by channel and status as ANALYZE estimates them (see tidings.live_estimate, migration 0013): for a
-- backlog too large to count on a page load. Groups too rare to be among the most common values are absent.
SELECT channel, status, n AS count FROM tidings.live_estimate() ORDER BY channel, status
