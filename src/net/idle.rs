//! An idle timer that costs nothing per read: activity only records a timestamp, and the timer is
//! re-armed lazily when it fires early. Re-arming a tokio `Sleep` on every read would put a timer-wheel
//! update on the data path of every connection.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Fires when nothing has happened on a connection for the configured time.
#[derive(Debug)]
pub struct IdleTimer {
    timeout: Option<Duration>,
    last_activity: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    /// A timer that fires after `timeout` of inactivity; `None` never fires.
    pub fn new(timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        let first = timeout.unwrap_or(Duration::from_secs(86_400 * 365));
        IdleTimer {
            timeout,
            last_activity: now,
            sleep: Box::pin(tokio::time::sleep_until(now + first)),
        }
    }

    /// Records activity: the deadline moves to `timeout` from now.
    pub fn touch(&mut self) {
        if self.timeout.is_some() {
            self.last_activity = Instant::now();
        }
    }

    /// Completes once the connection has been idle for the whole timeout. Cancel-safe.
    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll(cx)).await
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl Future for IdleTimer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let Some(timeout) = self.timeout else {
            return std::task::Poll::Pending;
        };
        loop {
            std::task::ready!(self.sleep.as_mut().poll(cx));
            let due = self.last_activity + timeout;
            if Instant::now() >= due {
                return std::task::Poll::Ready(());
            }
            self.sleep.as_mut().reset(due);
        }
    }
}
