//! Chat without a terminal: `--send TEXT`, or the lines of a pipe. Each line is sent only after the
//! server has delivered the one before (its echo, or the reply to a command), which keeps within
//! the server's rate limit and means "exit 0" is "everything was delivered". Everything the server
//! says is printed as plain lines, `[12:00:01] <ann> hi`; errors go to stderr.

use std::io::{BufRead, Write};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{Link, Update};
use super::protocol::{clean, EventKind, Identity, Incoming, ReplyKind};
use super::{ClientConfig, ClientError};

/// How long a line may wait for its delivery while connected.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the connection may stay down (after having worked once) before giving up.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Pause before sending again a line the server's rate limit refused.
const RATE_RETRY: Duration = Duration::from_millis(300);

/// The lines to send: a receiver of lines, as given by [`lines_of`] or [`stdin_lines`].
pub type Lines = mpsc::Receiver<std::io::Result<String>>;

/// The lines of `text`.
pub fn lines_of(text: &str) -> Lines {
    let lines: Vec<&str> = text.lines().collect();
    let (tx, rx) = mpsc::channel(lines.len().max(1));
    for line in lines {
        let _ = tx.try_send(Ok(line.to_string()));
    }
    rx
}

/// The lines of standard input, read on a thread of their own: a blocking read that never ends
/// (an open terminal) must not keep the process from exiting after `/quit`.
pub fn stdin_lines() -> Lines {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.blocking_send(Ok(line)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// What shows that a sent line was delivered.
#[derive(Debug)]
enum Expect {
    /// This client's own message or action with this text.
    Said(EventKind, String),
    /// This client's own private message.
    Private,
    /// The goodbye to `/quit`.
    Bye,
    /// Any reply, or an event about this client (a /nick, a /join).
    Reply,
}

impl Expect {
    fn of(text: &str) -> Expect {
        if let Some(said) = text.strip_prefix("//") {
            return Expect::Said(EventKind::Message, format!("/{said}"));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Expect::Said(EventKind::Message, text.to_string());
        };
        let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        match name.to_ascii_lowercase().as_str() {
            "me" => Expect::Said(EventKind::Action, args.trim().to_string()),
            "msg" | "query" => Expect::Private,
            "quit" | "exit" => Expect::Bye,
            _ => Expect::Reply,
        }
    }
}

/// How the server answered a sent line.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Refused,
    RateLimited,
}

/// A line sent and not yet confirmed.
#[derive(Debug)]
struct Pending {
    text: String,
    expect: Expect,
    since: Instant,
}

impl Pending {
    /// Whether `msg` settles this line. `me` is the client's identity before `msg` is applied
    /// (a nick change event names the old nick).
    fn outcome(&self, msg: &Incoming, me: &Identity) -> Option<Outcome> {
        match msg {
            Incoming::Reply(r) if r.is_rate_limited() => Some(Outcome::RateLimited),
            // The line is on its way, only later: keep waiting for it.
            Incoming::Reply(r) if r.kind == ReplyKind::Slowed => None,
            Incoming::Reply(r) if r.kind == ReplyKind::Error => Some(Outcome::Refused),
            Incoming::Reply(r) => match &self.expect {
                Expect::Bye if r.kind == ReplyKind::Bye => Some(Outcome::Delivered),
                Expect::Reply if r.kind != ReplyKind::Welcome => Some(Outcome::Delivered),
                _ => None,
            },
            Incoming::Event(e) if me.is_me(&e.nick) => match &self.expect {
                Expect::Said(kind, text) if e.kind == *kind && e.text == *text => {
                    Some(Outcome::Delivered)
                }
                Expect::Private if e.kind == EventKind::Private => Some(Outcome::Delivered),
                Expect::Reply => Some(Outcome::Delivered),
                _ => None,
            },
            Incoming::Event(_) => None,
        }
    }
}

/// Sends `lines` one by one, printing what the server says to `out` (if `echo`: `--send` is quiet
/// unless `-v`), until the lines end and each was delivered, or `/quit` was answered. A nick that
/// is taken when the client first asks for it ends the run before anything is sent: going on
/// under a guest nick would post as someone else.
pub async fn run(
    config: ClientConfig,
    mut lines: Lines,
    mut out: impl Write,
    echo: bool,
) -> Result<(), ClientError> {
    let target = config.endpoint.to_string();
    let mut link = Link::start(config.link());
    let mut me = Identity::default();
    let mut pending: Option<Pending> = None;
    let mut ever_connected = false;
    let mut connected = false;
    let mut down_since: Option<Instant> = None;
    let mut input_done = false;
    let mut refused = 0;
    // Whether a room was ever entered: a nick taken on a reconnect (its own ghost, say) is not
    // the person's mistake, so only the first is fatal.
    let mut ever_joined = false;
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    let mut retry_armed = false;

    let result = loop {
        if input_done && pending.is_none() {
            break Ok(());
        }
        // Lines go out only once the room is entered: its history replay, which may hold an
        // identical older message, has then been received and cannot be taken for the echo.
        let ready = connected && me.in_room;
        let deadline = pending
            .as_ref()
            .map(|p| p.since + LINE_TIMEOUT)
            .unwrap_or_else(|| Instant::now() + LINE_TIMEOUT);
        tokio::select! {
            update = link.next() => match update {
                // The server answered /quit and closed.
                None => {
                    input_done = true;
                    pending = None;
                }
                Some(Update::Connecting { .. }) => {}
                Some(Update::Connected { .. }) => {
                    me = Identity::default();
                    connected = true;
                    ever_connected = true;
                    down_since = None;
                }
                Some(Update::Disconnected { error, retry_in }) => {
                    if !ever_connected {
                        break Err(error);
                    }
                    connected = false;
                    // Out of the room until the next connection's join: what arrives before it
                    // (which may come before `Connected`) is not about a pending line.
                    me = Identity::default();
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GIVE_UP {
                        break Err(ClientError::GaveUp { target, after: since.elapsed() });
                    }
                    eprintln!("sockit chat: {error}; reconnecting in {:.1}s", retry_in.as_secs_f64());
                    // A pending line is sent again once the room is entered on the new connection.
                    retry_armed = false;
                }
                Some(Update::NotSent(_)) => {}
                Some(Update::Incoming(msg)) => {
                    if let Incoming::Reply(r) = &msg {
                        if let (Some(nick), false) = (r.nick_taken(), ever_joined) {
                            break Err(ClientError::NickTaken(nick.to_string()));
                        }
                    }
                    // A pending line is (re)sent only once the room is entered, so what comes
                    // before that on a new connection answers the hello, not the line (a nick
                    // still held by a dead node's lease, say: the line must not count as refused).
                    if let Some(p) = pending.as_ref().filter(|_| me.in_room) {
                        match p.outcome(&msg, &me) {
                            Some(Outcome::Delivered) => pending = None,
                            Some(Outcome::Refused) => {
                                refused += 1;
                                pending = None;
                            }
                            Some(Outcome::RateLimited) => {
                                retry.as_mut().reset(Instant::now() + RATE_RETRY);
                                retry_armed = true;
                            }
                            None => {}
                        }
                    }
                    // Rate-limit refusals are retried, and the nick confirmation before the first
                    // join answers the hello: neither is news to the user.
                    let quiet = match &msg {
                        Incoming::Reply(r) => r.is_rate_limited()
                            || r.kind == ReplyKind::Slowed
                            || (r.kind == ReplyKind::Nick && !me.in_room),
                        Incoming::Event(_) => false,
                    };
                    let joined_before = me.in_room;
                    me.observe(&msg);
                    ever_joined |= me.in_room;
                    if !quiet {
                        print(&msg, &mut out, echo);
                    }
                    // A line that was in flight when the connection dropped goes again once the
                    // room is entered on the new connection.
                    if me.in_room && !joined_before && connected {
                        if let Some(p) = &mut pending {
                            p.since = Instant::now();
                            if link.send(p.text.clone()).is_err() {
                                retry.as_mut().reset(Instant::now() + RATE_RETRY);
                                retry_armed = true;
                            }
                        }
                    }
                }
            },
            _ = &mut retry, if retry_armed => {
                retry_armed = false;
                if let (Some(p), true) = (&pending, ready) {
                    if link.send(p.text.clone()).is_err() {
                        retry.as_mut().reset(Instant::now() + RATE_RETRY);
                        retry_armed = true;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if pending.is_some() && connected => {
                let line = pending.take().map(|p| p.text).unwrap_or_default();
                break Err(ClientError::NoEcho { line, after: LINE_TIMEOUT });
            }
            line = lines.recv(), if ready && pending.is_none() && !input_done => match line {
                None => input_done = true,
                Some(Err(e)) => break Err(ClientError::Input(e)),
                Some(Ok(line)) => {
                    let text = clean(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    let p = Pending { expect: Expect::of(&text), text, since: Instant::now() };
                    if link.send(p.text.clone()).is_err() {
                        retry.as_mut().reset(Instant::now() + RATE_RETRY);
                        retry_armed = true;
                    }
                    pending = Some(p);
                }
            },
        }
    };
    let _ = out.flush();
    link.close().await;
    match result {
        Ok(()) if refused > 0 => Err(ClientError::Refused(refused)),
        other => other,
    }
}

/// Prints a server line: events and replies to `out` (if `echo`), errors to stderr. The welcome
/// is plumbing.
fn print(msg: &Incoming, out: &mut impl Write, echo: bool) {
    let _ = match msg {
        Incoming::Reply(r) if r.kind == ReplyKind::Error => {
            eprintln!("{}", r.plain());
            Ok(())
        }
        _ if !echo => Ok(()),
        Incoming::Event(e) => writeln!(out, "{}", e.plain()),
        Incoming::Reply(r) if r.kind == ReplyKind::Welcome => Ok(()),
        Incoming::Reply(r) => writeln!(out, "{}", r.plain()),
    };
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_what_confirms_a_line() {
        assert!(matches!(Expect::of("hi"), Expect::Said(EventKind::Message, t) if t == "hi"));
        assert!(matches!(Expect::of("//etc"), Expect::Said(EventKind::Message, t) if t == "/etc"));
        assert!(
            matches!(Expect::of("/me waves "), Expect::Said(EventKind::Action, t) if t == "waves")
        );
        assert!(matches!(Expect::of("/msg bob hi"), Expect::Private));
        assert!(matches!(Expect::of("/QUIT now"), Expect::Bye));
        assert!(matches!(Expect::of("/part"), Expect::Reply));
        assert!(matches!(Expect::of("/who"), Expect::Reply));
    }
}
