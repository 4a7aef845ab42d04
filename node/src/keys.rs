//! Key files in the home: `keys/NAME.key` for publishers and members and
//! `node.key` for the node, each a hex seed readable only by its owner.

use std::fs;

use anyhow::{Context, Result, bail};
use packfed_protocol::KeyPair;

use crate::config::{Home, write_private};

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Creates `keys/NAME.key`; refuses to overwrite.
pub fn new_key(home: &Home, name: &str) -> Result<KeyPair> {
    if !valid_key_name(name) {
        bail!("key name {name:?} may hold only letters, digits, '-', '_' and '.' (1-64 characters)");
    }
    let path = home.keys_dir().join(format!("{name}.key"));
    if path.exists() {
        bail!(
            "key {name:?} already exists in {}; choose another name",
            home.keys_dir().display()
        );
    }
    let key = KeyPair::generate()?;
    write_private(&path, key.to_file_text().as_bytes())?;
    Ok(key)
}

/// Loads `keys/NAME.key`.
pub fn load_key(home: &Home, name: &str) -> Result<KeyPair> {
    if !valid_key_name(name) {
        bail!("key name {name:?} is not valid");
    }
    let path = home.keys_dir().join(format!("{name}.key"));
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "no key named {name:?} in {} (create one with `packfed key new {name}`)",
            home.keys_dir().display()
        )
    })?;
    KeyPair::from_file_text(&text).with_context(|| format!("reading {}", path.display()))
}

/// Every key in the home, sorted by name.
pub fn list_keys(home: &Home) -> Result<Vec<(String, KeyPair)>> {
    let dir = home.keys_dir();
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"))
        else {
            continue;
        };
        let text = fs::read_to_string(&path)?;
        out.push((
            name.to_string(),
            KeyPair::from_file_text(&text).with_context(|| format!("reading {}", path.display()))?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The node key, created on first use.
pub fn node_key(home: &Home) -> Result<KeyPair> {
    let path = home.node_key();
    if path.exists() {
        let text = fs::read_to_string(&path)?;
        return KeyPair::from_file_text(&text).with_context(|| format!("reading {}", path.display()));
    }
    let key = KeyPair::generate()?;
    write_private(&path, key.to_file_text().as_bytes())?;
    Ok(key)
}

/// The node's libp2p peer id, derived from the same seed.
pub fn peer_id(key: &KeyPair) -> Result<libp2p_identity::PeerId> {
    let kp =
        libp2p_identity::Keypair::ed25519_from_bytes(key.seed()).context("node key is not a valid ed25519 seed")?;
    Ok(kp.public().to_peer_id())
}

/// The ed25519 key behind a libp2p peer id (an identity multihash of the
/// protobuf-encoded key), if it is one.
pub fn public_key_of_peer(peer: &str) -> Option<packfed_protocol::PublicKey> {
    let id: libp2p_identity::PeerId = peer.parse().ok()?;
    let bytes = id.to_bytes();
    // 0x00 identity, 0x24 = 36 bytes: 08 01 12 20 || key.
    let key = bytes.strip_prefix(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20])?;
    packfed_protocol::PublicKey::from_slice(key).ok()
}
