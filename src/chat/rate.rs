//! Rate limits of chat clients. The token bucket itself is the net layer's, shared with every
//! other limit a server keeps.

#[allow(unused_imports)]
pub use crate::net::TokenBucket;
