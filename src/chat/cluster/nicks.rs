//! Nicks across the cluster: a claim in Redis per nick (`sockit:nick:FOLDED` → `NODE:CLIENT`),
//! held by its node's lease (`sockit:node:NODE`, a few seconds, refreshed every second while the
//! node lives). A claim is granted when the nick is free, already the claimer's, or held by a
//! node whose lease is gone (a dead node's nicks are free within the lease); all of it in one
//! script, so two nodes asking at once get one winner. Guests get their numbers from one counter,
//! so no two nodes hand out the same guest nick.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::chat::hub::{ClientId, NickError};

/// How long a node's lease lasts without a refresh: how soon a dead node's nicks are free.
pub const LEASE: Duration = Duration::from_secs(4);

/// How often a live node refreshes its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(1);

static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the nick's claim; ARGV[1] the claimer (NODE:CLIENT)
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local node = string.match(cur, '^([^:]+):')
  if node and redis.call('EXISTS', 'sockit:node:' .. node) == 1 then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
",
    )
});

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the nick's claim; ARGV[1] the holder letting go (only its own claim is deleted)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

static HELD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the nick's claim: 1 if it is held under a live lease
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local node = string.match(cur, '^([^:]+):')
if node and redis.call('EXISTS', 'sockit:node:' .. node) == 1 then return 1 end
return 0
",
    )
});

/// The key of a node's lease.
pub fn lease_key(node: &str) -> String {
    format!("sockit:node:{node}")
}

fn nick_key(folded: &str) -> String {
    format!("sockit:nick:{folded}")
}

/// This node's side of the cluster's nick claims.
#[derive(Clone)]
pub struct NickClaims {
    node: String,
    conn: ConnectionManager,
}

impl std::fmt::Debug for NickClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NickClaims")
            .field("node", &self.node)
            .finish()
    }
}

impl NickClaims {
    pub(super) fn new(node: String, conn: ConnectionManager) -> Self {
        NickClaims { node, conn }
    }

    fn owner(&self, client: ClientId) -> String {
        format!("{}:{client}", self.node)
    }

    /// Claims `folded` (a case-folded nick) for `client`.
    pub async fn claim(&self, folded: &str, nick: &str, client: ClientId) -> Result<(), NickError> {
        let mut conn = self.conn.clone();
        match reclaim(&mut conn, &self.node, client, folded).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(NickError::Taken(nick.to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a nick in the chat cluster");
                Err(NickError::Invalid(
                    "the chat cluster cannot be reached to claim that nick; try again".into(),
                ))
            }
        }
    }

    /// Lets go of `client`'s claim of `folded`, in the background (a session being dropped
    /// cannot wait); a claim left behind by a failure is free once this node's lease ends.
    pub fn release(&self, folded: &str, client: ClientId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let folded = folded.to_string();
        runtime.spawn(async move { this.release_now(&folded, client).await });
    }

    /// Lets go of `client`'s claim of `folded`, and waits until Redis has: a rename must not
    /// leave a release behind that could reach Redis after the client claims the nick again.
    pub async fn release_now(&self, folded: &str, client: ClientId) {
        let mut conn = self.conn.clone();
        let done: redis::RedisResult<i64> = RELEASE
            .key(nick_key(folded))
            .arg(self.owner(client))
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "cannot release a nick in the chat cluster");
        }
    }

    /// Whether a live client holds `folded` (an unreachable cluster says no).
    pub async fn is_held(&self, folded: &str) -> bool {
        let mut conn = self.conn.clone();
        let held: redis::RedisResult<i64> =
            HELD.key(nick_key(folded)).invoke_async(&mut conn).await;
        matches!(held, Ok(1))
    }

    /// A guest number no other node hands out.
    pub async fn guest_number(&self) -> Result<u64, NickError> {
        let mut conn = self.conn.clone();
        redis::cmd("INCR")
            .arg("sockit:guests")
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot number a guest in the chat cluster");
                NickError::Invalid("the chat cluster cannot be reached; try again".into())
            })
    }
}

/// Claims `folded` for `client` of `node` (the sessions' claims, and a swept node's claims made
/// again); false if someone else holds it.
pub(super) async fn reclaim(
    conn: &mut ConnectionManager,
    node: &str,
    client: ClientId,
    folded: &str,
) -> redis::RedisResult<bool> {
    let granted: i64 = CLAIM
        .key(nick_key(folded))
        .arg(format!("{node}:{client}"))
        .invoke_async(conn)
        .await?;
    Ok(granted == 1)
}

/// Keeps `node`'s lease alive until `stop`; then ends it, so its nicks are free at once.
pub(super) async fn hold_lease(
    mut conn: ConnectionManager,
    node: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let key = lease_key(&node);
    let mut tick = tokio::time::interval(LEASE_REFRESH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let set: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(LEASE.as_millis() as u64)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = set {
                    tracing::debug!(error = %e, "cannot refresh the node's lease");
                }
            }
        }
    }
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
}
