-- How many migrations this database has applied successfully (for /readyz).
SELECT count(*) FROM _sqlx_migrations WHERE success
