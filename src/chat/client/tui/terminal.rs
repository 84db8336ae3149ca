//! The terminal: raw mode and the alternate screen while the UI runs, put back on every way out
//! (normal exit, error, panic), and a thread that turns key presses into a channel.

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

/// Set when a panic restored the terminal, so the UI stops drawing on the normal screen.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// How often the reader thread checks whether the UI is still there.
const POLL: Duration = Duration::from_millis(100);

/// The terminal in UI mode; dropping it restores the terminal.
pub struct Term {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Term {
    /// Enters raw mode and the alternate screen (restoring both if a later step fails).
    pub fn enter() -> io::Result<Term> {
        install_panic_hook();
        enable_raw_mode()?;
        let entered = execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)
            .and_then(|_| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Term { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Whether a panic happened (and the terminal is already restored).
    pub fn panicked() -> bool {
        PANICKED.load(Ordering::SeqCst)
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was. Safe to call more than once.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal before the panic message is printed, so the message is readable and the
/// shell is usable.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            restore();
            previous(info);
        }));
    });
}

/// Reads terminal events on a thread (crossterm's reads block) until `stop` is set or the
/// receiver is dropped.
pub fn spawn_reader(stop: Arc<AtomicBool>) -> mpsc::Receiver<io::Result<Event>> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let ready = match event::poll(POLL) {
                Ok(ready) => ready,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if !ready {
                continue;
            }
            let event = event::read();
            let failed = event.is_err();
            if tx.blocking_send(event).is_err() || failed {
                return;
            }
        }
    });
    rx
}
