-- Benchmark only: the hot tables at rest (visibility map set, statistics current), as a long-lived table is.
VACUUM (ANALYZE) tidings.messages, tidings.message_events
