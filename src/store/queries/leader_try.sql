-- Takes the fleet's maintenance leadership if no other session holds it: a session advisory lock, held until this
-- connection ends (a killed process's connection ends at once, so the lock is free for the next election). The
-- keepalive settings make the server notice a leader that vanished from the network (a host cut off) within about
-- 20 s (10 s idle, then two probes 5 s apart), and end its session, releasing the lock; without them that takes
-- the kernel's default of over two hours. Keepalives only probe an idle connection: when the leader is cut off
-- while the server still waits for an answer it sent to be acknowledged, tcp_user_timeout (20 s) ends the session
-- instead of the kernel's retransmissions (about 15 minutes). They apply to this connection only (TCP connections;
-- a Unix socket needs none).
SELECT pg_try_advisory_lock(7596220364041245002) AS leader
  FROM (SELECT set_config('tcp_keepalives_idle', '10', false),
               set_config('tcp_keepalives_interval', '5', false),
               set_config('tcp_keepalives_count', '2', false),
               set_config('tcp_user_timeout', '20000', false)) keepalive
