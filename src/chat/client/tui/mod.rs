//! The full-screen terminal client: messages above, members at the side, a status line and the
//! input line at the bottom. One loop reacts to keys, to the link and to a clock tick, and redraws
//! after each batch of changes.

mod app;
mod draw;
mod editor;
mod terminal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use self::app::{App, Quit};
use self::terminal::Term;
use super::link::Link;
use super::protocol::Identity;
use super::{ClientConfig, ClientError};

/// Redraw at least this often, for the reconnect countdown.
const TICK: Duration = Duration::from_millis(500);

/// Runs the terminal client until Ctrl-C, `/quit`, SIGINT, SIGTERM or SIGHUP. The terminal is restored
/// on every way out.
pub async fn run(config: ClientConfig) -> Result<(), ClientError> {
    let mut term = Term::enter().map_err(ClientError::Terminal)?;
    let stop_reader = Arc::new(AtomicBool::new(false));
    let mut keys = terminal::spawn_reader(stop_reader.clone());
    let mut terminate = signal(SignalKind::terminate()).map_err(ClientError::Terminal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ClientError::Terminal)?;
    // Raw mode turns Ctrl-C into a key; a SIGINT from elsewhere still ends the client cleanly.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ClientError::Terminal)?;
    let mut link = Link::start(config.link());
    let mut app = App::new(
        config.endpoint.to_string(),
        Identity::new(config.nick.clone(), config.room.clone()),
    );
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let result = loop {
        if Term::panicked() {
            break Ok(());
        }
        if let Err(e) = term.terminal.draw(|f| draw::draw(f, &mut app)) {
            break Err(ClientError::Terminal(e));
        }
        let quit_at = match app.quit {
            Quit::After(at) => at,
            _ => Instant::now() + Duration::from_secs(86_400),
        };
        tokio::select! {
            key = keys.recv() => match key {
                Some(Ok(event)) => app.on_terminal(event, &link),
                Some(Err(e)) => break Err(ClientError::Terminal(e)),
                None => break Ok(()),
            },
            update = link.next() => match update {
                Some(update) => {
                    app.on_update(update, &link);
                    // Apply whatever else arrived (a history replay) before drawing again.
                    while let Some(more) = link.try_next() {
                        app.on_update(more, &link);
                    }
                }
                // The server answered /quit.
                None => break Ok(()),
            },
            _ = tick.tick() => {}
            _ = terminate.recv() => break Ok(()),
            _ = hangup.recv() => break Ok(()),
            _ = interrupt.recv() => break Ok(()),
            _ = tokio::time::sleep_until(quit_at), if matches!(app.quit, Quit::After(_)) => break Ok(()),
        }
        if app.quit == Quit::Now {
            break Ok(());
        }
        // The rest of a paste, as the link's queue drains.
        app.flush(&link);
    };
    stop_reader.store(true, Ordering::SeqCst);
    link.close().await;
    drop(term);
    result
}
