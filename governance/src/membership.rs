//! Who belongs to a federation: a member's key, role and voting weight.
//! Below both the genesis (which lists the founding members) and the
//! acceptance policy (whose rules name roles), so neither imports the other.

use serde::{Deserialize, Serialize};

use packfed_protocol::PublicKey;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Maintainer,
    Core,
    Community,
    Security,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Maintainer => "maintainer",
            Role::Core => "core",
            Role::Community => "community",
            Role::Security => "security",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "maintainer" => Ok(Role::Maintainer),
            "core" => Ok(Role::Core),
            "community" => Ok(Role::Community),
            "security" => Ok(Role::Security),
            _ => Err(format!("role {s:?} must be maintainer, core, community or security")),
        }
    }
}

/// A federation member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub public_key: PublicKey,
    pub role: Role,
    pub weight: u64,
}

impl std::str::FromStr for Member {
    type Err = String;
    /// `PUBKEY:ROLE:WEIGHT`, the command-line form.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [key, role, weight] = parts[..] else {
            return Err(format!("member {s:?} must be PUBKEY:ROLE:WEIGHT"));
        };
        Ok(Member {
            public_key: key.parse().map_err(|e| format!("member {s:?}: {e}"))?,
            role: role.parse()?,
            weight: weight
                .parse()
                .map_err(|_| format!("member {s:?}: weight must be a whole number"))?,
        })
    }
}
