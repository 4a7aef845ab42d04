//! Content ids: 32-byte BLAKE3 digests, printed as lowercase hex.

use std::fmt;
use std::str::FromStr;

/// Errors parsing a hex id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("expected 64 lowercase hex characters, got {0} characters")]
    Length(usize),
    #[error("not hex: {0}")]
    NotHex(String),
    #[error("expected 32 bytes, got {0}")]
    Bytes(usize),
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// BLAKE3 of `bytes`.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// From a byte slice as found in a decoded record.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| IdError::Bytes(bytes.len()))?;
                Ok(Self(arr))
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &hex::encode(self.0)[..12])
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.len() != 64 {
                    return Err(IdError::Length(s.len()));
                }
                if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(IdError::NotHex(s.to_string()));
                }
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdError::NotHex(s.to_string()))?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_id!(
    /// BLAKE3 of a pack archive: the address of its bytes everywhere.
    ContentHash
);
hash_id!(
    /// BLAKE3 of the genesis file: names a federation in every signature.
    FederationId
);
hash_id!(
    /// BLAKE3 of an encoded `Signed` envelope: names one record.
    RecordId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_is_lowercase() {
        let h = ContentHash::of(b"hello");
        let s = h.to_string();
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<ContentHash>().unwrap(), h);
        assert!(s.to_uppercase().parse::<ContentHash>().is_err());
        assert_eq!("abc".parse::<ContentHash>(), Err(IdError::Length(3)));
    }
}
