//! Running many small jobs at once, within a limit that can change while they run, and showing how
//! far along they are: what a tool that fans out (the port scanner) shares with others, kept apart
//! from the load generators of [`crate::bench`] so that no tool depends on them.
//!
//! [`Gate`] is a concurrency limit that can be lowered and raised at run time (a scanner lowers it
//! when the kernel runs out of descriptors, raises it as answers come back); [`Progress`] is a
//! progress bar on stderr that only draws on a terminal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A limit on how many jobs hold a [`Slot`] at once, adjustable at run time.
///
/// Lowering the limit never cancels a job: slots held above the new limit are taken out of
/// circulation as their jobs end, so the number held converges on the limit from above.
#[derive(Debug)]
pub struct Gate {
    sem: Arc<Semaphore>,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    limit: usize,
    /// Slots handed out beyond the current limit, to be retired rather than returned on release.
    debt: usize,
}

impl Gate {
    /// A gate letting `limit` jobs (at least one) through at once.
    pub fn new(limit: usize) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Gate {
            sem: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(GateState { limit, debt: 0 }),
        })
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        // The semaphore is never closed, so acquiring cannot fail; should it ever, the job goes
        // through without a permit rather than the whole run stopping.
        let permit = self.sem.clone().acquire_owned().await.ok();
        Slot {
            permit,
            gate: self.clone(),
        }
    }

    /// A free slot now, if there is one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.sem.clone().try_acquire_owned().ok()?;
        Some(Slot {
            permit: Some(permit),
            gate: self.clone(),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// How many slots are held now.
    pub fn in_use(&self) -> usize {
        let state = self.lock();
        (state.limit + state.debt).saturating_sub(self.sem.available_permits())
    }

    /// Changes the limit (at least one).
    pub fn set_limit(&self, new: usize) {
        let new = new.max(1);
        let mut state = self.lock();
        if new > state.limit {
            let mut add = new - state.limit;
            let pay = add.min(state.debt);
            state.debt -= pay;
            add -= pay;
            if add > 0 {
                self.sem.add_permits(add);
            }
        } else if new < state.limit {
            let remove = state.limit - new;
            let forgot = self.sem.forget_permits(remove);
            state.debt += remove - forgot;
        }
        state.limit = new;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, permit: OwnedSemaphorePermit) {
        let mut state = self.lock();
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

/// One job's place in a [`Gate`]; the place is given back when this is dropped.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.gate.release(permit);
        }
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal (and the caller asks for it);
/// otherwise every call is a no-op, so scripts and pipes see no control characters.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` steps, shown when `show` is true and stderr is a terminal.
    pub fn new(total: u64, show: bool) -> Self {
        use std::io::IsTerminal;
        let bar = if show && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Whether anything is drawn.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets the text after the bar.
    pub fn message(&self, text: impl Into<String>) {
        self.bar.set_message(text.into());
    }

    /// Runs `f` (which prints) with the bar out of the way, so lines do not mix with it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_moves_both_ways_while_slots_are_held() {
        let gate = Gate::new(4);
        let held: Vec<Slot> = futures::future::join_all((0..4).map(|_| gate.acquire())).await;
        assert_eq!(gate.in_use(), 4);
        gate.set_limit(2);
        assert_eq!(gate.limit(), 2);
        drop(held);
        // Two of the four were retired: only two can be had now.
        let a = gate.acquire().await;
        let b = gate.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), gate.acquire()).await;
        assert!(third.is_err(), "a third slot within a limit of 2");
        gate.set_limit(3);
        let c = tokio::time::timeout(Duration::from_millis(500), gate.acquire()).await;
        assert!(c.is_ok(), "the raised limit lets a third through");
        assert_eq!(gate.in_use(), 3);
        drop((a, b, c));
        assert_eq!(gate.in_use(), 0);
    }
}
