-- Make tidings.callback_hosts exactly $1 ([callbacks] allowed_hosts, lower-cased): the config is the truth, so a
-- host taken out of the file is no longer allowed once any process syncs.
WITH gone AS (
    DELETE FROM tidings.callback_hosts WHERE pattern <> ALL ($1::text[])
)
INSERT INTO tidings.callback_hosts (pattern)
SELECT DISTINCT p FROM unnest($1::text[]) AS p
ON CONFLICT (pattern) DO NOTHING
