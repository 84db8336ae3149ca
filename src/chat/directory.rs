//! Who holds which nick, across the whole chat: one interface whether the chat is one node (the
//! hub's own map decides, and this has nothing to add) or a cluster (claims in Redis, held by
//! node leases: [`crate::chat::cluster::nicks`]). The hub asks it before it renames a client and
//! tells it when a nick is let go.

use super::cluster::presence::Change;
use super::cluster::ClusterDirectory;
use super::hub::{ClientId, NickError};

#[derive(Debug, Clone, Default)]
pub enum Directory {
    /// One node: the hub's nick map is the whole truth.
    #[default]
    Local,
    /// A node of a cluster.
    Cluster(ClusterDirectory),
}

impl Directory {
    /// Claims `nick` (case-folded: `folded`) for `client` across the chat.
    pub async fn claim(&self, folded: &str, nick: &str, client: ClientId) -> Result<(), NickError> {
        match self {
            Directory::Local => Ok(()),
            Directory::Cluster(c) => c.claims.claim(folded, nick, client).await,
        }
    }

    /// Lets go of `client`'s claim of `folded` (without waiting).
    pub fn release(&self, folded: &str, client: ClientId) {
        if let Directory::Cluster(c) = self {
            c.claims.release(folded, client);
        }
    }

    /// Lets go of `client`'s claim of `folded`, waiting until it is gone.
    pub async fn release_now(&self, folded: &str, client: ClientId) {
        if let Directory::Cluster(c) = self {
            c.claims.release_now(folded, client).await;
        }
    }

    /// Whether a live client anywhere in the chat holds `folded` (on one node the hub's map
    /// answers, so this says no).
    pub async fn is_held(&self, folded: &str) -> bool {
        match self {
            Directory::Local => false,
            Directory::Cluster(c) => c.claims.is_held(folded).await,
        }
    }

    /// A guest number unique across the chat, where the hub's own count is not (a cluster).
    pub async fn guest_number(&self) -> Option<Result<u64, NickError>> {
        match self {
            Directory::Local => None,
            Directory::Cluster(c) => Some(c.claims.guest_number().await),
        }
    }

    /// Records where a client went, beyond this node (a cluster's presence).
    pub fn moved(&self, change: impl FnOnce() -> Change) {
        if let Directory::Cluster(c) = self {
            c.moved(change());
        }
    }

    /// The nicks in `room` on every node; `None` where this node's own list is the answer (one
    /// node, or a cluster that cannot be asked).
    pub async fn who(&self, room: &str) -> Option<Vec<String>> {
        match self {
            Directory::Local => None,
            Directory::Cluster(c) => match c.who(room).await {
                Ok(nicks) => Some(nicks),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a room's members from the chat cluster");
                    None
                }
            },
        }
    }
}
