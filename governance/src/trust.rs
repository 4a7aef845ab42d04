//! The per-user install trust policy: which publishers, licenses and M-of-N
//! attestations a user demands before installing, on top of what the
//! federation accepted. TOML with a `[trust]` table; checked by the same
//! pure helpers as the acceptance policy.

use serde::{Deserialize, Deserializer, Serialize};

use packfed_protocol::PublicKey;

use crate::evaluate::{
    AttestationFact, Evaluation, Failure, ReleaseFacts, check_count, check_license, current, key16, matching,
    role_matches,
};
use crate::membership::Role;
use crate::policy::{AttestationKind, Verdict};

/// One M-of-N requirement; every entry must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRequirement {
    pub kind: AttestationKind,
    pub result: Verdict,
    /// Distinct attesters needed (M).
    #[serde(default = "one", deserialize_with = "at_least_one")]
    pub min: u32,
    /// Attesters must hold one of these roles; empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Only these keys count (the N); empty means any key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attesters: Vec<PublicKey>,
}

fn one() -> u32 {
    1
}

// Checked while deserializing so the toml error names the line and field.
fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom("min must be at least 1"));
    }
    Ok(n)
}

/// The `[trust]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// Empty means any publisher.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<PublicKey>,
    /// SPDX ids; empty means any license.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<TrustRequirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    trust: TrustPolicy,
}

impl TrustPolicy {
    /// Parses trust-file TOML; errors carry the line and field from the parser.
    pub fn parse(text: &str) -> Result<TrustPolicy, String> {
        let f: TrustFile = toml::from_str(text).map_err(|e| format!("trust file: {e}"))?;
        for (i, r) in f.trust.require.iter().enumerate() {
            let mut listed = r.attesters.clone();
            listed.sort_unstable();
            listed.dedup();
            // M greater than N could never hold; say so now, not at install time.
            if !listed.is_empty() && usize::try_from(r.min).unwrap_or(usize::MAX) > listed.len() {
                return Err(format!(
                    "trust file: trust.require[{i}]: min {} is more than the {} listed attesters",
                    r.min,
                    listed.len()
                ));
            }
        }
        Ok(f.trust)
    }

    /// Checks a release against this policy. Rules: "trust.publishers",
    /// "trust.licenses", "trust.require[i]".
    pub fn check(
        &self,
        release: &ReleaseFacts,
        attestations: &[AttestationFact],
        role_of: &dyn Fn(&PublicKey) -> Option<Role>,
    ) -> Evaluation {
        let mut failures = Vec::new();
        let mut satisfied_by = Vec::new();
        if !self.publishers.is_empty() && !self.publishers.contains(&release.publisher) {
            failures.push(Failure {
                rule: "trust.publishers".into(),
                reason: format!(
                    "publisher {} is not one of the {} trusted publishers",
                    key16(&release.publisher),
                    self.publishers.len()
                ),
            });
        }
        if let Err(reason) = check_license(&self.licenses, release.license) {
            failures.push(Failure {
                rule: "trust.licenses".into(),
                reason,
            });
        }
        let now = current(attestations);
        for (i, r) in self.require.iter().enumerate() {
            let admit = |k: &PublicKey| {
                (r.attesters.is_empty() || r.attesters.contains(k)) && role_matches(&r.roles, role_of, k)
            };
            let counted = matching(&now, r.kind, r.result, &admit);
            let listed = (!r.attesters.is_empty()).then(|| {
                let mut keys = r.attesters.clone();
                keys.sort_unstable();
                keys.dedup();
                keys.len()
            });
            match check_count(&counted, r.kind, r.result, r.min, &r.roles, listed) {
                Ok(()) => satisfied_by.extend(counted.iter().map(|a| a.id)),
                Err(reason) => failures.push(Failure {
                    rule: format!("trust.require[{i}]"),
                    reason,
                }),
            }
        }
        satisfied_by.sort_unstable();
        satisfied_by.dedup();
        Evaluation { failures, satisfied_by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::tests::{fact, key, release, roles};
    use AttestationKind::Audit;
    use Verdict::Pass;

    #[test]
    fn parses_full_example() {
        let text = format!(
            r#"
[trust]
publishers = ["{}"]
licenses = ["MIT"]
[[trust.require]]
kind = "audit"
result = "pass"
min = 2
roles = ["security"]
attesters = ["{}", "{}", "{}"]
"#,
            key(100),
            key(1),
            key(2),
            key(3)
        );
        let t = TrustPolicy::parse(&text).unwrap();
        assert_eq!(t.publishers, vec![key(100)]);
        assert_eq!(t.require[0].min, 2);
        assert_eq!(t.require[0].attesters.len(), 3);
        assert_eq!(TrustPolicy::parse("").unwrap(), TrustPolicy::default());
    }

    #[test]
    fn parse_errors_name_line_and_field() {
        let e = TrustPolicy::parse("[trust]\nlicenses = [\"MIT\"]\npublishers = [\"abcd\"]\n").unwrap_err();
        assert!(e.starts_with("trust file: "), "{e}");
        assert!(e.contains("line 3") && e.contains("publishers"), "{e}");

        let e = TrustPolicy::parse("[trust]\n[[trust.require]]\nkind = \"audit\"\nresult = \"pass\"\nmin = 0\n")
            .unwrap_err();
        assert!(e.contains("line 5") && e.contains("min must be at least 1"), "{e}");

        let e = TrustPolicy::parse("[trust]\n[[trust.require]]\nkind = \"audits\"\nresult = \"pass\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("kind"), "{e}");

        let e = TrustPolicy::parse("[trust]\nlicences = []\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("licences"), "{e}");

        let e = TrustPolicy::parse(&format!(
            "[trust]\n[[trust.require]]\nkind = \"audit\"\nresult = \"pass\"\nmin = 2\nattesters = [\"{}\"]\n",
            key(1)
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "trust file: trust.require[0]: min 2 is more than the 1 listed attesters"
        );
    }

    #[test]
    fn publishers_filter() {
        let t = TrustPolicy {
            publishers: vec![key(100), key(101)],
            ..TrustPolicy::default()
        };
        assert!(t.check(&release("MIT"), &[], &roles).accepted());
        let mut r = release("MIT");
        r.publisher = key(102);
        let e = t.check(&r, &[], &roles);
        assert_eq!(e.failures[0].rule, "trust.publishers");
        assert_eq!(
            e.failures[0].reason,
            format!(
                "publisher {} is not one of the 2 trusted publishers",
                &key(102).to_hex()[..16]
            )
        );
        assert!(TrustPolicy::default().check(&r, &[], &roles).accepted());
    }

    #[test]
    fn licenses_rule() {
        let t = TrustPolicy {
            licenses: vec!["MIT".into()],
            ..TrustPolicy::default()
        };
        assert!(t.check(&release("MIT OR Apache-2.0"), &[], &roles).accepted());
        let e = t.check(&release("Apache-2.0"), &[], &roles);
        assert_eq!(e.failures[0].rule, "trust.licenses");
        assert_eq!(
            e.failures[0].reason,
            "license Apache-2.0 is not in the allowed list MIT"
        );
    }

    #[test]
    fn require_m_of_listed_attesters() {
        let req = TrustRequirement {
            kind: Audit,
            result: Pass,
            min: 2,
            roles: vec![],
            attesters: vec![key(1), key(4), key(9)],
        };
        let t = TrustPolicy {
            require: vec![req.clone()],
            ..TrustPolicy::default()
        };
        // Key 2 is not listed and key 1 attesting twice counts once.
        let facts = [
            fact(1, 1, Audit, Pass, 1),
            fact(2, 1, Audit, Pass, 2),
            fact(3, 2, Audit, Pass, 1),
        ];
        let e = t.check(&release("MIT"), &facts, &roles);
        assert_eq!(e.failures[0].rule, "trust.require[0]");
        assert_eq!(
            e.failures[0].reason,
            "requires 2 passing audit attestations from distinct attesters among the 3 listed attesters, has 1"
        );
        let mut facts = facts.to_vec();
        facts.push(fact(4, 9, Audit, Pass, 1));
        let e = t.check(&release("MIT"), &facts, &roles);
        assert!(e.accepted(), "{:?}", e.failures);
        assert_eq!(e.satisfied_by, vec![[2; 32], [4; 32]]);

        // With a role too: non-member 9 and community 4 no longer count.
        let t = TrustPolicy {
            require: vec![TrustRequirement {
                roles: vec![Role::Security],
                ..req
            }],
            ..t
        };
        facts.push(fact(5, 4, Audit, Pass, 1));
        let e = t.check(&release("MIT"), &facts, &roles);
        assert_eq!(
            e.failures[0].reason,
            "requires 2 passing audit attestations from distinct security members among the 3 listed attesters, has 1"
        );
    }
}
