//! The packfed wire protocol, free of I/O beyond reading and writing the
//! archives it is handed.
//!
//! What lives here: identities and keys ([`keys`]), content ids ([`ids`]), the
//! signed envelope ([`signed`]) and the records it carries ([`records`]), pack
//! manifests ([`manifest`]), the deterministic archive format ([`archive`]),
//! quality guards ([`quality`]) and the size limits every decoder obeys
//! ([`limits`]). What does not: networking, storage, clocks. Callers pass the
//! time in.

pub mod archive;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod quality;
pub mod records;
pub mod signed;
pub mod variables;

/// prost types generated from `proto/packfed/v1/*.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/packfed.v1.rs"));
}

pub use ids::{ContentHash, FederationId, RecordId};
pub use keys::{KeyPair, PublicKey};
pub use signed::{Checked, Domain, Signed, SignedError, SignerKeys, Verified, signing_message, verify_many};
