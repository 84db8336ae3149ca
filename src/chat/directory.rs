//! Who holds which nick, across the whole chat: one interface whether the chat is one node (the
//! hub's own map decides, and this has nothing to add) or a cluster (claims in Redis, held by
//! node leases: [`crate::chat::cluster::nicks`]). The hub asks it before it renames a client and
//! tells it when a nick is let go.

use super::cluster::nicks::NickClaims;
use super::hub::{ClientId, NickError};

#[derive(Debug, Clone, Default)]
pub enum Directory {
    /// One node: the hub's nick map is the whole truth.
    #[default]
    Local,
    /// A node of a cluster.
    Cluster(NickClaims),
}

impl Directory {
    /// Claims `nick` (case-folded: `folded`) for `client` across the chat.
    pub async fn claim(&self, folded: &str, nick: &str, client: ClientId) -> Result<(), NickError> {
        match self {
            Directory::Local => Ok(()),
            Directory::Cluster(c) => c.claim(folded, nick, client).await,
        }
    }

    /// Lets go of `client`'s claim of `folded` (without waiting).
    pub fn release(&self, folded: &str, client: ClientId) {
        if let Directory::Cluster(c) = self {
            c.release(folded, client);
        }
    }

    /// Whether a live client anywhere in the chat holds `folded` (on one node the hub's map
    /// answers, so this says no).
    pub async fn is_held(&self, folded: &str) -> bool {
        match self {
            Directory::Local => false,
            Directory::Cluster(c) => c.is_held(folded).await,
        }
    }

    /// A guest number unique across the chat, where the hub's own count is not (a cluster).
    pub async fn guest_number(&self) -> Option<Result<u64, NickError>> {
        match self {
            Directory::Local => None,
            Directory::Cluster(c) => Some(c.guest_number().await),
        }
    }
}
