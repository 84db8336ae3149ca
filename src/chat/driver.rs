//! The one session loop under every transport: it opens the [`Session`], runs the transport's
//! writer, and owns everything between a client's input and the hub — the negotiation timer, the
//! idle timer, the server stopping, the client being dropped (its send queue overflowed or its
//! writer stalled), the session's own waits (fakelag, the join barrier, the reply budget) and the
//! close. A transport ([`super::stream`] for TCP/TLS/Unix lines, [`super::web::gateway`] for
//! WebSocket messages) supplies only framing: what it read, and how its connection closes.
//!
//! So a fix to the loop is a fix to every transport, and a new transport (IRC, a cluster node's
//! link) is a framing and a writer, not a copy of the loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::hub::{ChatHub, HubClosed};
use super::outbox::{OutItem, Outbox, State};
use super::session::{End, Session};
use super::wire::Format;
use super::ChatSettings;
use crate::net::{IdleTimer, PeerAddr};

/// What a transport read from its client, in the terms the session loop acts on.
#[derive(Debug)]
pub enum Input {
    /// A whole line (a text message, for WebSocket) for the session.
    Line(Bytes),
    /// Bytes to send back as they are, ahead of nothing else (telnet's negotiation answers).
    Answer(Bytes),
    /// Input refused with this error; the client stays connected.
    Refused(String),
    /// Input that is not a line yet (the start of one): it counts as activity.
    Activity,
    /// Nothing for the session, and not activity either (pings: an open tab nobody reads still
    /// times out).
    Nothing,
    /// The connection is over; `tell` is said to the client first, where it can still arrive.
    End { end: End, tell: Option<String> },
}

/// A transport's framing: how it reads, and what it does when its connection ends.
pub trait Transport: Send + Sized {
    /// Reads until the next thing worth telling the loop. Must be cancel-safe: the loop drops it
    /// whenever something else happens first.
    fn next(&mut self) -> impl Future<Output = Input> + Send;

    /// Told after each handled line the format the session now speaks (the first line may have
    /// been a JSON hello, after which the line decoder must treat DEL as text).
    fn handled(&mut self, _format: Format) {}

    /// Told how the session ends, before the writer sends what is left (WebSocket picks its close
    /// frame here).
    fn ending(&mut self, _end: &End) {}

    /// After the writer is done (WebSocket reads the client's answering close frame).
    fn finish(self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The connection a session runs on, as the transport's server handed it over.
pub struct Link {
    pub peer: PeerAddr,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// Cancelled when the connection's handler was cut after the drain time (a task the server
    /// cannot simply drop, as an upgraded WebSocket).
    pub gone: CancellationToken,
    pub idle_timeout: Option<Duration>,
    /// How long a client that says nothing has to send a JSON hello before it is put in the
    /// default room as a plain client.
    pub negotiate: Duration,
    /// The protocol the client starts in.
    pub format: Format,
}

/// What the loop asks of the session once it has read something.
enum Step {
    Line(Bytes),
    /// The client said nothing before the negotiation time: into the default room.
    EnterDefault,
}

/// The session's handling of one step, boxed (see [`run`]).
type Work<'a> = Pin<Box<dyn Future<Output = Result<Option<End>, HubClosed>> + Send + 'a>>;

/// Serves one client until it quits, drops, idles out, falls behind, or the server stops.
/// `writer` is the transport's output side: it drains the outbox to the client.
pub async fn run<T, W>(
    hub: ChatHub,
    cfg: Arc<ChatSettings>,
    link: Link,
    mut transport: T,
    writer: impl FnOnce(Arc<Outbox>) -> W,
) where
    T: Transport,
    W: Future<Output = ()> + Send + 'static,
{
    let (mut s, outbox) = Session::open(hub, cfg, link.format, &link.peer);
    let peer = &link.peer;
    tracing::debug!(%peer, nick = s.nick(), "chat client connected");
    let writer = tokio::spawn(writer(outbox.clone()));

    let mut idle = IdleTimer::new(link.idle_timeout);
    let ended = outbox.ended().clone();
    let stopped = link.shutdown.cancelled();
    let gone = link.gone.cancelled();
    let kicked = ended.cancelled();
    let negotiate = tokio::time::sleep(link.negotiate);
    tokio::pin!(stopped, gone, kicked, negotiate);

    let end = loop {
        let step = tokio::select! {
            biased;
            _ = &mut stopped => break s.stopping(),
            _ = &mut gone => break s.stopping(),
            _ = &mut kicked => break dropped(&outbox),
            _ = &mut negotiate, if !s.in_room() => Step::EnterDefault,
            _ = &mut idle => {
                s.error("disconnected: idle for too long");
                break End::Idle;
            }
            input = transport.next() => match input {
                Input::Line(line) => {
                    idle.touch();
                    Step::Line(line)
                }
                Input::Answer(bytes) => {
                    outbox.push(OutItem::Raw(bytes));
                    continue;
                }
                Input::Refused(why) => {
                    idle.touch();
                    s.error(&why);
                    continue;
                }
                Input::Activity => {
                    idle.touch();
                    continue;
                }
                Input::Nothing => continue,
                Input::End { end, tell } => {
                    if let Some(tell) = tell {
                        s.error(&tell);
                    }
                    break end;
                }
            },
        };
        // The session's waits (fakelag, the reply budget, a join's trip through the sequencer)
        // run here, beside the server stopping and the client being dropped, so that neither
        // waits for them; nothing more is read meanwhile, which is fakelag's backpressure.
        // Boxed: the waits' state is allocated per line, not carried by every idle connection.
        let session = &mut s;
        let work: Work<'_> = match step {
            Step::Line(line) => Box::pin(async move { session.handle(&line).await }),
            Step::EnterDefault => {
                Box::pin(async move { session.enter_default().await.map(|()| None) })
            }
        };
        let handled = tokio::select! {
            biased;
            _ = &mut stopped => break s.stopping(),
            _ = &mut gone => break s.stopping(),
            _ = &mut kicked => break dropped(&outbox),
            handled = work => handled,
        };
        transport.handled(outbox.format());
        match handled {
            Ok(None) => {}
            Ok(Some(end)) => break end,
            Err(HubClosed) => break s.stopping(),
        }
    };

    let nick = s.nick().to_string();
    transport.ending(&end);
    s.close(end).await;
    let _ = writer.await;
    transport.finish().await;
    tracing::debug!(%peer, %nick, "chat client left");
}

/// Why the hub or the writer let the client go.
fn dropped(outbox: &Outbox) -> End {
    match outbox.state() {
        State::Overflowed => End::Overflowed,
        _ => End::Closed,
    }
}
