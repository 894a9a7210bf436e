-- The worker's role: exactly the privileges `tidings worker` uses, so a deployment can run workers without
-- owning the schema. Like tidings_producer (0002): cluster-wide, so created only when missing; a migrating user
-- without CREATEROLE gets a notice instead, and a concurrent migration of another database creating it first
-- is fine. Grant it to the worker's login role: GRANT tidings_worker TO my_worker_login;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        CREATE ROLE tidings_worker NOLOGIN;
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'tidings: could not create role tidings_worker (needs CREATEROLE); create it by hand';
    WHEN duplicate_object OR unique_violation THEN
        NULL; -- created meanwhile by a concurrent migration of another database
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        GRANT USAGE ON SCHEMA tidings TO tidings_worker;
        -- Claim, complete, rescue, sweep (UPDATE; FOR UPDATE needs it too) and the pruner (DELETE).
        GRANT SELECT, UPDATE, DELETE ON tidings.messages TO tidings_worker;
        -- Events are appended with every status change and deleted with their message by the pruner.
        GRANT SELECT, INSERT, DELETE ON tidings.message_events TO tidings_worker;
        -- Channel sync at start, the shared 429 pause and rate-limit bucket.
        GRANT SELECT, INSERT, UPDATE ON tidings.channels, tidings.channel_state TO tidings_worker;
        -- Opt-outs are checked at dispatch.
        GRANT SELECT ON tidings.suppressions TO tidings_worker;
        -- The pruner turns its cut-off time into a UUIDv7 bound.
        GRANT EXECUTE ON FUNCTION tidings.uuid_v7(timestamptz) TO tidings_worker;
        -- /readyz compares the applied migrations with the embedded ones.
        IF to_regclass('_sqlx_migrations') IS NOT NULL THEN
            GRANT SELECT ON _sqlx_migrations TO tidings_worker;
        END IF;
    END IF;
END $$;
