//! The node's sans-IO core: every decision about what a node accepts is made
//! here, by code that takes inputs (a record's bytes and the channel it came
//! through, a local command, the time as an argument) and returns
//! [`Effect`]s for the shell (the `node` module) to carry out: store this,
//! replicate that, gossip, set a verdict, re-evaluate those releases, fetch
//! a blob, wake me at T. Reads go through [`View`], which the shell backs
//! with sled and the unit tests with maps.
//!
//! No sled, tokio, libp2p or clock in here (`SystemTime::now()` is the
//! shell's), in the spirit of quinn-proto and radicle-heartwood's `Service`.
//!
//! - [`admit`]: admission of every record kind from a peer or a local command
//! - [`verdict`]: the acceptance policy in force and verdicts under it
//! - [`gov`]: governance records and the state they put in force
//! - [`learning`]: federated-learning round bookkeeping
//! - [`witness`]: checkpoint logs and witnessed time (the federation's order)
//! - [`effect`], [`view`]: what the core asks for and what it reads

pub mod admit;
pub mod effect;
pub mod gov;
pub mod learning;
pub mod verdict;
pub mod view;
pub mod witness;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod witness_tests;

pub use effect::{Effect, Topic, Write};
pub use view::View;

/// Which replicated document (and trust boundary) a record came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Public gossip and the public registry document.
    Public,
    /// The org document, synced only with org peers.
    Org,
}

impl Channel {
    /// The document number in sync requests.
    pub fn doc(self) -> u32 {
        match self {
            Channel::Public => 0,
            Channel::Org => 1,
        }
    }

    pub fn from_doc(doc: u32) -> Option<Channel> {
        match doc {
            0 => Some(Channel::Public),
            1 => Some(Channel::Org),
            _ => None,
        }
    }
}
