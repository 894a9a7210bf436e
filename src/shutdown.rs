//! Shutdown signals. Two stages: `stop` (stop claiming, let in-flight sends finish) and `abort` (the grace
//! period is over: release what is still in flight).

use tokio_util::sync::CancellationToken;

/// The two shutdown stages of a worker, shared by all its services.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Stop taking new work.
    pub stop: CancellationToken,
    /// Give up on in-flight work now.
    pub abort: CancellationToken,
}

impl Shutdown {
    /// A fresh, un-triggered pair.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    signal_listener().await
}

/// Installs the SIGTERM and SIGINT handlers now (not when first polled) and resolves on the first of them:
/// a process that calls this first thing exits cleanly on a signal that arrives while it is still starting.
pub(crate) fn signal_listener() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
