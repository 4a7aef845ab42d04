//! The genesis file founds a federation: its name, members (key, role,
//! weight), governance parameters and initial acceptance policy, as
//! human-readable TOML. The federation id is the BLAKE3 of the file's exact
//! bytes, so nodes copy the file verbatim and never rewrite it; a random
//! `salt` keeps two federations with the same name and members apart.

use serde::{Deserialize, Serialize};

use packfed_protocol::{FederationId, PublicKey};

use crate::duration::Duration;
pub use crate::membership::{Member, Role};
use crate::policy::Policy;

/// Largest genesis file we read.
pub const MAX_GENESIS_BYTES: usize = 1024 * 1024;

/// Governance parameters. Fractions are written as decimals in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Share of the total weight that must vote (for + against + abstain).
    pub quorum: f64,
    /// for / (for + against) needed to succeed.
    pub threshold: f64,
    pub voting_delay: Duration,
    pub voting_period: Duration,
    pub timelock: Duration,
    /// A succeeded proposal not executed within this after its timelock expires.
    pub grace_period: Duration,
    /// Minimum weight of a proposer.
    pub proposal_threshold: u64,
    /// Members with these roles witness (keep checkpoint logs that order
    /// the federation's records).
    #[serde(default = "default_witness_roles")]
    pub witness_roles: Vec<Role>,
    /// A witness quorum is more than this share of the witnesses' weight.
    #[serde(default = "half")]
    pub witness_quorum: f64,
}

fn default_witness_roles() -> Vec<Role> {
    vec![Role::Maintainer, Role::Core]
}

fn half() -> f64 {
    0.5
}

impl Default for Parameters {
    fn default() -> Self {
        Self {
            quorum: 0.5,
            threshold: 0.5,
            voting_delay: Duration(0),
            voting_period: Duration(72 * 3600),
            timelock: Duration(24 * 3600),
            grace_period: Duration(14 * 86_400),
            proposal_threshold: 1,
            witness_roles: default_witness_roles(),
            witness_quorum: half(),
        }
    }
}

impl Parameters {
    /// The names [`Parameters::set`] accepts, as written in the genesis file.
    pub const NAMES: [&'static str; 9] = [
        "quorum",
        "threshold",
        "voting_delay",
        "voting_period",
        "timelock",
        "grace_period",
        "proposal_threshold",
        "witness_roles",
        "witness_quorum",
    ];

    /// Sets one parameter from its genesis-file spelling: fractions as
    /// decimals in 0..=1, durations like `90s`/`15m`/`72h`/`14d`, the
    /// proposal threshold as a whole number. Leaves `self` unchanged on error.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        let fraction = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| format!("{name} must be a decimal between 0 and 1, not {value:?}"))
        };
        let duration = || value.parse::<Duration>().map_err(|e| format!("{name}: {e}"));
        match name {
            "quorum" => self.quorum = fraction()?,
            "threshold" => self.threshold = fraction()?,
            "voting_delay" => self.voting_delay = duration()?,
            "voting_period" => {
                let d = duration()?;
                // A zero-length vote could never be cast; the genesis check refuses it too.
                if d.secs() == 0 {
                    return Err("voting_period must be longer than 0s".into());
                }
                self.voting_period = d;
            }
            "timelock" => self.timelock = duration()?,
            "grace_period" => self.grace_period = duration()?,
            "witness_quorum" => {
                let f = fraction()?;
                if f < 0.5 {
                    return Err(format!(
                        "witness_quorum must be at least 0.5 (more than half), not {value}"
                    ));
                }
                self.witness_quorum = f;
            }
            "witness_roles" => {
                self.witness_roles = value
                    .split(',')
                    .map(|r| r.trim().parse::<Role>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("witness_roles: {e}"))?
            }
            "proposal_threshold" => {
                self.proposal_threshold = value
                    .parse()
                    .map_err(|_| format!("proposal_threshold must be a whole number, not {value:?}"))?
            }
            _ => {
                return Err(format!("unknown parameter {name:?}; one of {}", Self::NAMES.join(", ")));
            }
        }
        Ok(())
    }
}

/// The `[federation]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationInfo {
    pub name: String,
    /// Random hex; makes the id unique.
    pub salt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    federation: FederationInfo,
    #[serde(default)]
    members: Vec<Member>,
    parameters: Parameters,
    #[serde(default)]
    policy: Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis file is {0} bytes, over the {MAX_GENESIS_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("genesis file: {0}")]
    Syntax(String),
    #[error("genesis file: {0}")]
    Invalid(String),
}

/// A parsed genesis with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Genesis {
    pub id: FederationId,
    pub info: FederationInfo,
    pub members: Vec<Member>,
    pub parameters: Parameters,
    pub policy: Policy,
}

fn check(info: &FederationInfo, members: &[Member], p: &Parameters) -> Result<(), GenesisError> {
    let bad = |m: String| Err(GenesisError::Invalid(m));
    if info.name.trim().is_empty() || info.name.len() > 64 {
        return bad("federation.name must be 1-64 characters".into());
    }
    if !(0.0..=1.0).contains(&p.quorum) || !(0.0..=1.0).contains(&p.threshold) {
        return bad("parameters.quorum and parameters.threshold must be between 0 and 1".into());
    }
    if !(0.5..=1.0).contains(&p.witness_quorum) {
        return bad("parameters.witness_quorum must be between 0.5 and 1 (a quorum is more than that share)".into());
    }
    if p.voting_period.secs() == 0 {
        return bad("parameters.voting_period must be longer than 0s".into());
    }
    let mut keys: Vec<_> = members.iter().map(|m| m.public_key).collect();
    keys.sort();
    keys.dedup();
    if keys.len() != members.len() {
        return bad("a member key appears twice in [[members]]".into());
    }
    if let Some(m) = members.iter().find(|m| m.weight == 0) {
        return bad(format!(
            "member {} has weight 0; weights must be at least 1",
            m.public_key
        ));
    }
    Ok(())
}

impl Genesis {
    /// Writes the genesis file text for these contents.
    pub fn render(
        name: &str,
        salt: &str,
        members: Vec<Member>,
        parameters: Parameters,
        policy: Policy,
    ) -> Result<String, GenesisError> {
        let info = FederationInfo {
            name: name.to_string(),
            salt: salt.to_string(),
        };
        check(&info, &members, &parameters)?;
        let file = GenesisFile {
            federation: info,
            members,
            parameters,
            policy,
        };
        let body = toml::to_string_pretty(&file).map_err(|e| GenesisError::Invalid(e.to_string()))?;
        Ok(format!(
            "# packfed federation genesis. Its BLAKE3 is the federation id:\n# editing one byte makes another federation.\n\n{body}"
        ))
    }

    /// Parses genesis bytes; the id is their BLAKE3.
    pub fn parse(bytes: &[u8]) -> Result<Genesis, GenesisError> {
        if bytes.len() > MAX_GENESIS_BYTES {
            return Err(GenesisError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| GenesisError::Syntax("not UTF-8 text".into()))?;
        let file: GenesisFile = toml::from_str(text).map_err(|e| GenesisError::Syntax(e.to_string()))?;
        check(&file.federation, &file.members, &file.parameters)?;
        Ok(Genesis {
            id: FederationId::of(bytes),
            info: file.federation,
            members: file.members,
            parameters: file.parameters,
            policy: file.policy,
        })
    }

    pub fn member(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| &m.public_key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packfed_protocol::KeyPair;

    #[test]
    fn render_parse_round_trip_and_id_is_file_hash() {
        let k = KeyPair::generate().unwrap().public();
        let m: Member = format!("{k}:security:2").parse().unwrap();
        let text = Genesis::render(
            "acme-fed",
            "00ff",
            vec![m.clone()],
            Parameters::default(),
            Policy::default(),
        )
        .unwrap();
        let g = Genesis::parse(text.as_bytes()).unwrap();
        assert_eq!(g.members, vec![m]);
        assert_eq!(g.id, FederationId::of(text.as_bytes()));
        let edited = text.replace("acme-fed", "acme-feD");
        assert_ne!(Genesis::parse(edited.as_bytes()).unwrap().id, g.id);
    }

    #[test]
    fn refuses_bad_members() {
        assert!("abc:security:1".parse::<Member>().is_err());
        let k = KeyPair::generate().unwrap().public();
        assert!(format!("{k}:boss:1").parse::<Member>().is_err());
        let m: Member = format!("{k}:core:1").parse().unwrap();
        let e = Genesis::render("f", "00", vec![m.clone(), m], Parameters::default(), Policy::default());
        assert!(e.is_err());
    }
}
