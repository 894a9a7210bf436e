//! The fleet's maintenance leadership (see `queries/leader_try.sql`): one worker process at a time runs the
//! rescuer, sweeper, pruner, rollup and queue sampler; the others stand by and take over when it goes.

use sqlx::{Connection, PgConnection};

use super::Store;
use crate::error::Result;

/// The connection holding the leadership: the lock lives as long as it does.
#[derive(Debug)]
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// True while the connection, and so the lock, is still there.
    pub async fn holds(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    /// Gives the leadership up at once (the connection closes; the lock goes with it).
    pub async fn resign(self) {
        let _ = self.conn.close().await;
    }
}

impl Store {
    /// Takes the maintenance leadership on a connection of its own (taken out of the pool for as long as it is
    /// held), or None when another process leads.
    pub async fn leader_try(&self) -> Result<Option<Leadership>> {
        let mut conn = self.pool.acquire().await?;
        let leader: bool = sqlx::query_scalar(include_str!("queries/leader_try.sql"))
            .fetch_one(&mut *conn)
            .await?;
        Ok(leader.then(|| Leadership {
            conn: conn.detach(),
        }))
    }
}
