//! The acceptance policy: which releases a node accepts, in the TOML form of
//! CLI.md (`[accept]` with licenses, min_quality, max_pack_bytes, `require`
//! and `deny` entries). Its evaluation builds on these types.

use serde::{Deserialize, Serialize};

use crate::membership::Role;

/// Attestation predicate kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestationKind {
    Audit,
    ReproducibleBuild,
    License,
    VulnScan,
    Review,
    Benchmark,
    /// Signed by nodes with the quality score they recomputed.
    Quality,
}

impl AttestationKind {
    /// Every kind, in declaration order.
    pub const ALL: [AttestationKind; 7] = [
        AttestationKind::Audit,
        AttestationKind::ReproducibleBuild,
        AttestationKind::License,
        AttestationKind::VulnScan,
        AttestationKind::Review,
        AttestationKind::Benchmark,
        AttestationKind::Quality,
    ];

    /// The name used in TOML and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationKind::Audit => "audit",
            AttestationKind::ReproducibleBuild => "reproducible-build",
            AttestationKind::License => "license",
            AttestationKind::VulnScan => "vuln-scan",
            AttestationKind::Review => "review",
            AttestationKind::Benchmark => "benchmark",
            AttestationKind::Quality => "quality",
        }
    }
}

impl std::fmt::Display for AttestationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttestationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AttestationKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "attestation kind {s:?} must be one of audit, reproducible-build, license, vuln-scan, review, \
                 benchmark, quality"
                )
            })
    }
}

/// An attestation's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    /// The name used in TOML and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pass" => Ok(Verdict::Pass),
            "fail" => Ok(Verdict::Fail),
            _ => Err(format!("attestation result {s:?} must be pass or fail")),
        }
    }
}

/// Every entry must hold for a release to be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub kind: AttestationKind,
    pub result: Verdict,
    /// Distinct attesters needed.
    #[serde(default = "one")]
    pub min: u32,
    /// Attesters must hold one of these roles; empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

fn one() -> u32 {
    1
}

/// Any match quarantines a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    pub kind: AttestationKind,
    pub result: Verdict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

/// The `[accept]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// SPDX ids; empty means any license.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<String>,
    #[serde(default)]
    pub min_quality: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pack_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Requirement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Denial>,
}

/// A whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub accept: Accept,
}

impl Policy {
    /// Parses policy TOML; errors carry the line and field from the parser.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy = toml::from_str(text).map_err(|e| format!("policy file: {e}"))?;
        if p.accept.min_quality > 100 {
            return Err("policy file: accept.min_quality must be 0..100".into());
        }
        if let Some(r) = p.accept.require.iter().find(|r| r.min == 0) {
            return Err(format!(
                "policy file: accept.require ({:?}): min must be at least 1",
                r.kind
            ));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_md_example() {
        let p = Policy::parse(
            r#"
[accept]
licenses = ["MIT", "Apache-2.0"]
min_quality = 40
max_pack_bytes = 52428800
[[accept.require]]
kind = "audit"
result = "pass"
min = 1
roles = ["security"]
[[accept.deny]]
kind = "vuln-scan"
result = "fail"
"#,
        )
        .unwrap();
        assert_eq!(p.accept.require[0].roles, vec![Role::Security]);
        assert_eq!(p.accept.deny[0].kind, AttestationKind::VulnScan);
    }

    #[test]
    fn errors_give_line_and_field() {
        let e = Policy::parse("[accept]\nmin_quality = \"high\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("min_quality"), "{e}");
    }

    #[test]
    fn kind_and_verdict_names_round_trip_with_serde() {
        for k in AttestationKind::ALL {
            assert_eq!(k.as_str().parse::<AttestationKind>().unwrap(), k);
            let d: Denial = toml::from_str(&format!("kind = \"{k}\"\nresult = \"fail\"")).unwrap();
            assert_eq!(d.kind, k);
        }
        for v in [Verdict::Pass, Verdict::Fail] {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), v);
        }
        let e = "sbom".parse::<AttestationKind>().unwrap_err();
        assert!(
            e.contains("audit, reproducible-build, license, vuln-scan, review, benchmark, quality"),
            "{e}"
        );
        assert!("ok".parse::<Verdict>().unwrap_err().contains("pass or fail"));
    }
}
