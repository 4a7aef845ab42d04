//! ed25519 keys: publisher and member keys held by people, and the node key
//! whose one 32-byte seed serves both libp2p and iroh.
//!
//! On disk a key is its seed as 64 hex characters and a newline; the caller
//! writes it with mode 0600 (this crate does no file I/O).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Errors reading or using keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a public key is 64 hex characters (32 bytes): {0}")]
    PublicKeyFormat(String),
    #[error("not a valid ed25519 public key: {0}")]
    InvalidPublicKey(String),
    #[error("a secret key file holds 64 hex characters (a 32-byte seed)")]
    SecretFormat,
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// An ed25519 public key; printed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Checks the bytes form a valid curve point.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::PublicKeyFormat(format!("{} bytes", bytes.len())))?;
        VerifyingKey::from_bytes(&arr).map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
        Ok(Self(arr))
    }

    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_bytes(&self.0).map_err(|e| KeyError::InvalidPublicKey(e.to_string()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(KeyError::PublicKeyFormat(s.to_string()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::PublicKeyFormat(s.to_string()))?;
        Self::from_slice(&out)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret key. The seed is the whole secret.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte seed, the form libp2p (`ed25519_from_bytes`) and iroh
    /// (`SecretKey::from_bytes`) take, so both derive the same public key.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The key file's contents.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.seed()))
    }

    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let t = text.trim();
        let mut seed = [0u8; 32];
        if t.len() != 64 {
            return Err(KeyError::SecretFormat);
        }
        hex::decode_to_slice(t, &mut seed).map_err(|_| KeyError::SecretFormat)?;
        Ok(Self::from_seed(seed))
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip() {
        let k = KeyPair::generate().unwrap();
        let back = KeyPair::from_file_text(&k.to_file_text()).unwrap();
        assert_eq!(back.public(), k.public());
        assert!(KeyPair::from_file_text("zz").is_err());
    }

    #[test]
    fn public_key_parse_rejects_garbage() {
        let k = KeyPair::generate().unwrap().public();
        assert_eq!(k.to_hex().parse::<PublicKey>().unwrap(), k);
        assert!("00".parse::<PublicKey>().is_err());
    }
}
