//! The shutdown signal: SIGINT or SIGTERM in the binary, a plain token in tests and embedders.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// How long a server waits for its connections to finish after a shutdown signal.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// Returns a token that is cancelled at the first SIGINT or SIGTERM. A second signal exits at once
/// (status 130), for when a drain is taking longer than the user wants to wait.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown signal received; draining");
        cancel.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    Ok(token)
}
