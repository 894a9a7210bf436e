//! A throwaway PostgreSQL cluster from the local binaries (`initdb`/`pg_ctl`), for `tidings demo` on a machine
//! with PostgreSQL installed but no server running. No crate does this for a system install without
//! downloading binaries (which this project must not do), so it is a few process calls written here.
//!
//! The tests also use it for what they must not do to the shared server: [`LocalPostgres::stop`] and
//! [`LocalPostgres::resume`] take the cluster down and bring it back on the same port and data directory, to
//! check `/readyz` and a worker riding out a database restart.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// A running private cluster; stopped (and its data removed) on drop.
pub struct LocalPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<String>,
}

impl LocalPostgres {
    /// The directory holding `initdb` and `pg_ctl`, if PostgreSQL is installed.
    pub fn find_binaries() -> Option<PathBuf> {
        let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has(&dir) {
                return Some(dir);
            }
        }
        // Debian/Ubuntu keep server binaries out of PATH, one directory per major version.
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| has(d))
            .collect();
        dirs.sort_by_key(|d| {
            d.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop()
    }

    /// Creates and starts a cluster in a fresh temporary directory, on a free loopback port.
    pub fn start(bin: PathBuf) -> Result<LocalPostgres> {
        // initdb refuses to run as root; use the `postgres` system user when we are root.
        let run_as = is_root().then(|| "postgres".to_owned());
        // Unique per process and per cluster: tests start several clusters in one process.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let data = std::env::temp_dir().join(format!(
            "tidings-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        if let Some(user) = &run_as {
            run(Command::new("chown").arg(user).arg(&data))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = LocalPostgres {
            bin,
            data,
            port,
            run_as,
        };
        pg.run_pg(
            "initdb",
            &[
                "-D",
                &pg.data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.resume()?;
        Ok(pg)
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are cut, as in a database restart or failover)
    /// and waits until it is down. The data directory stays; [`resume`](Self::resume) starts it again.
    pub fn stop(&self) -> Result<()> {
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts the server on its port and data directory (after [`stop`](Self::stop), or the first time) and
    /// waits until it accepts connections.
    pub fn resume(&self) -> Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.data.to_string_lossy()
        );
        let log = self.data.join("server.log");
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        )
    }

    /// Connection URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run_pg(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args);
        run(&mut cmd)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::Other(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
