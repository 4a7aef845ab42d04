//! The acceptance-policy engine: given a release's facts and the attestations
//! on it, decides whether each rule of an `[accept]` table holds and why not.
//! It is pure (no I/O, no clock) and insensitive to the order or duplication
//! of its input, so every node evaluating the same records reaches the same
//! verdict and can show the same reasons.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use packfed_protocol::PublicKey;

use crate::membership::Role;
use crate::policy::{Accept, AttestationKind, Verdict};

/// What the engine needs to know about the release itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseFacts<'a> {
    /// SPDX expression.
    pub license: &'a str,
    /// 0..=100.
    pub quality: u32,
    /// Pack size in bytes.
    pub size: u64,
    pub publisher: PublicKey,
}

/// One attestation on the release, already verified and filtered to its
/// content hash by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationFact {
    /// Record id; breaks ties between attestations with the same time.
    pub id: [u8; 32],
    pub attester: PublicKey,
    pub kind: AttestationKind,
    pub result: Verdict,
    pub time_ms: u64,
}

/// A rule that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// e.g. "accept.require[0]", or "local: accept.min_quality" from [`evaluate_all`].
    pub rule: String,
    /// A sentence for people.
    pub reason: String,
}

/// The outcome of evaluating one or more rule sets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Evaluation {
    /// In rule order.
    pub failures: Vec<Failure>,
    /// Sorted, deduplicated ids of the attestations counted toward
    /// requirements that held.
    pub satisfied_by: Vec<[u8; 32]>,
}

impl Evaluation {
    pub fn accepted(&self) -> bool {
        self.failures.is_empty()
    }

    fn finish(mut self) -> Self {
        self.satisfied_by.sort_unstable();
        self.satisfied_by.dedup();
        self
    }
}

/// The attestations still in force: per (attester, kind) only the one with
/// the greatest (time_ms, id), so a later statement supersedes an earlier
/// one. Sorted by (attester, kind).
pub fn current(attestations: &[AttestationFact]) -> Vec<&AttestationFact> {
    let mut latest: BTreeMap<(PublicKey, AttestationKind), &AttestationFact> = BTreeMap::new();
    for a in attestations {
        // `result` joins the key only so that malformed input (same id, different
        // result) still yields one answer whatever the input order.
        let rank = |f: &AttestationFact| (f.time_ms, f.id, f.result);
        latest
            .entry((a.attester, a.kind))
            .and_modify(|cur| {
                if rank(a) > rank(cur) {
                    *cur = a;
                }
            })
            .or_insert(a);
    }
    latest.into_values().collect()
}

/// Evaluates one `[accept]` table.
pub fn evaluate(
    accept: &Accept,
    release: &ReleaseFacts,
    attestations: &[AttestationFact],
    role_of: &dyn Fn(&PublicKey) -> Option<Role>,
) -> Evaluation {
    let now = current(attestations);
    let mut out = Evaluation::default();
    evaluate_current(accept, release, &now, role_of, &mut out);
    out.finish()
}

/// Evaluates several rule sets (e.g. federation and local); every set must
/// pass, so a local set can only add restrictions. Each failure's rule is
/// prefixed with its set's label, e.g. "local: accept.min_quality".
pub fn evaluate_all(
    rule_sets: &[(&str, &Accept)],
    release: &ReleaseFacts,
    attestations: &[AttestationFact],
    role_of: &dyn Fn(&PublicKey) -> Option<Role>,
) -> Evaluation {
    let now = current(attestations);
    let mut out = Evaluation::default();
    for (label, accept) in rule_sets {
        let mut one = Evaluation::default();
        evaluate_current(accept, release, &now, role_of, &mut one);
        out.failures.extend(one.failures.into_iter().map(|f| Failure {
            rule: format!("{label}: {}", f.rule),
            reason: f.reason,
        }));
        out.satisfied_by.extend(one.satisfied_by);
    }
    out.finish()
}

fn evaluate_current(
    accept: &Accept,
    release: &ReleaseFacts,
    now: &[&AttestationFact],
    role_of: &dyn Fn(&PublicKey) -> Option<Role>,
    out: &mut Evaluation,
) {
    let mut fail = |rule: String, reason: String| out.failures.push(Failure { rule, reason });
    if let Err(reason) = check_license(&accept.licenses, release.license) {
        fail("accept.licenses".into(), reason);
    }
    if release.quality < accept.min_quality {
        fail(
            "accept.min_quality".into(),
            format!(
                "quality {} is below the minimum {}",
                release.quality, accept.min_quality
            ),
        );
    }
    if let Some(max) = accept.max_pack_bytes
        && release.size > max
    {
        fail(
            "accept.max_pack_bytes".into(),
            format!("size {} bytes is over the limit {max}", release.size),
        );
    }
    for (i, r) in accept.require.iter().enumerate() {
        let counted = matching(now, r.kind, r.result, &|k| role_matches(&r.roles, role_of, k));
        if let Err(reason) = check_count(&counted, r.kind, r.result, r.min, &r.roles, None) {
            out.failures.push(Failure {
                rule: format!("accept.require[{i}]"),
                reason,
            });
        } else {
            out.satisfied_by.extend(counted.iter().map(|a| a.id));
        }
    }
    for (i, d) in accept.deny.iter().enumerate() {
        let hits = matching(now, d.kind, d.result, &|k| role_matches(&d.roles, role_of, k));
        if !hits.is_empty() {
            let by: Vec<String> = hits.iter().map(|a| key16(&a.attester)).collect();
            out.failures.push(Failure {
                rule: format!("accept.deny[{i}]"),
                reason: format!("denied: {} {} attestation by {}", past(d.result), d.kind, by.join(", ")),
            });
        }
    }
}

/// The first 16 hex characters of a key, enough to recognise it in a reason.
pub(crate) fn key16(k: &PublicKey) -> String {
    hex::encode(&k.0[..8])
}

/// Empty `roles` admits anyone, members or not; otherwise the attester must
/// be a member holding one of them.
pub(crate) fn role_matches(roles: &[Role], role_of: &dyn Fn(&PublicKey) -> Option<Role>, k: &PublicKey) -> bool {
    roles.is_empty() || role_of(k).is_some_and(|r| roles.contains(&r))
}

/// Current attestations of `kind` with `result` from attesters `admit`
/// accepts, one per distinct attester (the first in `now`'s order).
pub(crate) fn matching<'a>(
    now: &[&'a AttestationFact],
    kind: AttestationKind,
    result: Verdict,
    admit: &dyn Fn(&PublicKey) -> bool,
) -> Vec<&'a AttestationFact> {
    let mut seen = BTreeSet::new();
    now.iter()
        .copied()
        .filter(|a| a.kind == kind && a.result == result && admit(&a.attester))
        // `now` already holds one per (attester, kind); this keeps counting
        // distinct even if a caller passes a list that was not collapsed.
        .filter(|a| seen.insert(a.attester))
        .collect()
}

/// Checks an M-of-N requirement against the attestations `matching` counted.
/// `listed` is the size of an explicit attester list, when there is one.
pub(crate) fn check_count(
    counted: &[&AttestationFact],
    kind: AttestationKind,
    result: Verdict,
    min: u32,
    roles: &[Role],
    listed: Option<usize>,
) -> Result<(), String> {
    let have = counted.len();
    if u64::try_from(have).unwrap_or(u64::MAX) >= u64::from(min) {
        return Ok(());
    }
    let plural = if min == 1 { "" } else { "s" };
    let adjective = match result {
        Verdict::Pass => "passing",
        Verdict::Fail => "failing",
    };
    let role_list = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ");
    let from = match (roles.is_empty(), min == 1) {
        (true, true) => String::new(),
        (true, false) => " from distinct attesters".into(),
        (false, true) => format!(" from a {role_list} member"),
        (false, false) => format!(" from distinct {role_list} members"),
    };
    let among = listed.map_or(String::new(), |n| format!(" among the {n} listed attesters"));
    Err(format!(
        "requires {min} {adjective} {kind} attestation{plural}{from}{among}, has {have}"
    ))
}

fn past(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "passed",
        Verdict::Fail => "failed",
    }
}

/// Whether the SPDX expression `license` can be satisfied using only the
/// `allowed` ids (empty: any license, not even parsed). `MIT OR GPL-3.0-only`
/// passes with MIT allowed; `MIT AND GPL-3.0-only` does not.
pub(crate) fn check_license(allowed: &[String], license: &str) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    let expr = spdx::Expression::parse(license).map_err(|e| {
        let at = match license.get(e.span.clone()) {
            Some(t) if !t.trim().is_empty() => format!(" at {t:?}"),
            _ if !license.trim().is_empty() => " at the end".into(),
            _ => String::new(),
        };
        format!("license {license:?} is not a valid SPDX expression: {}{at}", e.reason)
    })?;
    // Parsed once; an allowed entry that is not an SPDX id can still match a
    // requirement written identically (e.g. a misspelt but agreed name).
    let licensees: Vec<Result<spdx::Licensee, &str>> = allowed
        .iter()
        .map(|a| spdx::Licensee::parse(a).map_err(|_| a.as_str()))
        .collect();
    let ok = |req: &spdx::LicenseReq| {
        licensees.iter().any(|l| match l {
            Ok(l) => l.satisfies(req),
            Err(text) => req.to_string() == *text,
        })
    };
    if expr.evaluate(ok) {
        return Ok(());
    }
    let list = allowed.join(", ");
    let single = expr.requirements().nth(1).is_none();
    if single {
        return Err(format!("license {license} is not in the allowed list {list}"));
    }
    let missing: BTreeSet<String> = expr
        .requirements()
        .filter(|r| !ok(&r.req))
        .map(|r| r.req.to_string())
        .collect();
    let missing: Vec<String> = missing.into_iter().collect();
    Err(format!(
        "license {license} cannot be satisfied from the allowed list {list} ({} not allowed)",
        missing.join(", ")
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::{Denial, Requirement};
    use packfed_protocol::KeyPair;
    use proptest::prelude::*;

    pub(crate) fn key(n: u8) -> PublicKey {
        KeyPair::from_seed([n; 32]).public()
    }

    pub(crate) fn fact(id: u8, attester: u8, kind: AttestationKind, result: Verdict, time_ms: u64) -> AttestationFact {
        AttestationFact {
            id: [id; 32],
            attester: key(attester),
            kind,
            result,
            time_ms,
        }
    }

    pub(crate) fn release(license: &str) -> ReleaseFacts<'_> {
        ReleaseFacts {
            license,
            quality: 50,
            size: 1000,
            publisher: key(100),
        }
    }

    /// Keys 1..=3 are security members, 4..=5 community, the rest non-members.
    pub(crate) fn roles(k: &PublicKey) -> Option<Role> {
        (1..=3)
            .find(|n| key(*n) == *k)
            .map(|_| Role::Security)
            .or_else(|| (4..=5).find(|n| key(*n) == *k).map(|_| Role::Community))
    }

    fn require(kind: AttestationKind, result: Verdict, min: u32, roles: &[Role]) -> Requirement {
        Requirement {
            kind,
            result,
            min,
            roles: roles.to_vec(),
        }
    }

    fn deny(kind: AttestationKind, result: Verdict, roles: &[Role]) -> Denial {
        Denial {
            kind,
            result,
            roles: roles.to_vec(),
        }
    }

    use AttestationKind::{Audit, Review, VulnScan};
    use Verdict::{Fail, Pass};

    #[test]
    fn empty_policy_accepts() {
        let e = evaluate(&Accept::default(), &release("NOT VALID ((("), &[], &roles);
        assert!(e.accepted());
        assert!(e.satisfied_by.is_empty());
    }

    #[test]
    fn licenses() {
        let a = Accept {
            licenses: vec!["MIT".into(), "Apache-2.0".into()],
            ..Accept::default()
        };
        assert!(evaluate(&a, &release("MIT"), &[], &roles).accepted());
        assert!(evaluate(&a, &release("MIT OR GPL-3.0-only"), &[], &roles).accepted());
        assert!(evaluate(&a, &release("Apache-2.0 AND MIT"), &[], &roles).accepted());

        let e = evaluate(&a, &release("GPL-3.0-only"), &[], &roles);
        assert_eq!(e.failures.len(), 1);
        assert_eq!(e.failures[0].rule, "accept.licenses");
        assert_eq!(
            e.failures[0].reason,
            "license GPL-3.0-only is not in the allowed list MIT, Apache-2.0"
        );

        let e = evaluate(&a, &release("MIT AND GPL-3.0-only"), &[], &roles);
        assert_eq!(
            e.failures[0].reason,
            "license MIT AND GPL-3.0-only cannot be satisfied from the allowed list MIT, Apache-2.0 \
             (GPL-3.0-only not allowed)"
        );

        let e = evaluate(&a, &release("MIT AND"), &[], &roles);
        assert!(
            e.failures[0].reason.contains("not a valid SPDX expression"),
            "{:?}",
            e.failures
        );
        assert!(e.failures[0].reason.ends_with("at the end"), "{:?}", e.failures);
        let e = evaluate(&a, &release("Bogus-1.0"), &[], &roles);
        assert!(e.failures[0].reason.contains("\"Bogus-1.0\""), "{:?}", e.failures);
    }

    #[test]
    fn min_quality_and_max_pack_bytes() {
        let a = Accept {
            min_quality: 40,
            max_pack_bytes: Some(52_428_800),
            ..Accept::default()
        };
        let mut r = release("MIT");
        r.quality = 40;
        r.size = 52_428_800;
        assert!(evaluate(&a, &r, &[], &roles).accepted());
        r.quality = 30;
        r.size = 60_000_000;
        let e = evaluate(&a, &r, &[], &roles);
        assert_eq!(
            e.failures,
            vec![
                Failure {
                    rule: "accept.min_quality".into(),
                    reason: "quality 30 is below the minimum 40".into()
                },
                Failure {
                    rule: "accept.max_pack_bytes".into(),
                    reason: "size 60000000 bytes is over the limit 52428800".into()
                },
            ]
        );
    }

    #[test]
    fn require_counts_distinct_attesters() {
        let a = Accept {
            require: vec![require(Audit, Pass, 2, &[])],
            ..Accept::default()
        };
        // Key 7 attests twice (two kinds would be distinct; same kind collapses).
        let twice = [fact(1, 7, Audit, Pass, 10), fact(2, 7, Audit, Pass, 20)];
        let e = evaluate(&a, &release("MIT"), &twice, &roles);
        assert_eq!(e.failures[0].rule, "accept.require[0]");
        assert_eq!(
            e.failures[0].reason,
            "requires 2 passing audit attestations from distinct attesters, has 1"
        );

        let two = [
            fact(1, 7, Audit, Pass, 10),
            fact(2, 8, Audit, Pass, 20),
            fact(3, 9, Review, Pass, 5),
        ];
        let e = evaluate(&a, &release("MIT"), &two, &roles);
        assert!(e.accepted(), "{:?}", e.failures);
        assert_eq!(e.satisfied_by, vec![[1; 32], [2; 32]]);
    }

    #[test]
    fn require_filters_roles() {
        let a = Accept {
            require: vec![require(Audit, Pass, 1, &[Role::Security])],
            ..Accept::default()
        };
        // Community member 4 and non-member 9 do not count.
        let facts = [fact(1, 4, Audit, Pass, 10), fact(2, 9, Audit, Pass, 10)];
        let e = evaluate(&a, &release("MIT"), &facts, &roles);
        assert_eq!(
            e.failures[0].reason,
            "requires 1 passing audit attestation from a security member, has 0"
        );
        assert!(e.satisfied_by.is_empty());
        let mut facts = facts.to_vec();
        facts.push(fact(3, 2, Audit, Pass, 10));
        let e = evaluate(&a, &release("MIT"), &facts, &roles);
        assert!(e.accepted());
        assert_eq!(e.satisfied_by, vec![[3; 32]]);

        // Empty roles admits non-members too.
        let anyone = Accept {
            require: vec![require(Audit, Pass, 1, &[])],
            ..Accept::default()
        };
        assert!(evaluate(&anyone, &release("MIT"), &[fact(2, 9, Audit, Pass, 10)], &roles).accepted());
    }

    #[test]
    fn deny_with_and_without_roles() {
        let a = Accept {
            deny: vec![deny(Review, Fail, &[]), deny(VulnScan, Fail, &[Role::Security])],
            ..Accept::default()
        };
        let e = evaluate(&a, &release("MIT"), &[fact(1, 9, VulnScan, Fail, 10)], &roles);
        assert!(
            e.accepted(),
            "non-member's vuln-scan does not trigger a security-only deny"
        );
        let e = evaluate(
            &a,
            &release("MIT"),
            &[fact(1, 1, VulnScan, Fail, 10), fact(2, 9, Review, Fail, 1)],
            &roles,
        );
        assert_eq!(
            e.failures,
            vec![
                Failure {
                    rule: "accept.deny[0]".into(),
                    reason: format!("denied: failed review attestation by {}", &key(9).to_hex()[..16]),
                },
                Failure {
                    rule: "accept.deny[1]".into(),
                    reason: format!("denied: failed vuln-scan attestation by {}", &key(1).to_hex()[..16]),
                },
            ]
        );
        assert!(evaluate(&a, &release("MIT"), &[fact(1, 1, VulnScan, Pass, 10)], &roles).accepted());
    }

    #[test]
    fn later_attestation_supersedes() {
        let a = Accept {
            require: vec![require(VulnScan, Pass, 1, &[])],
            deny: vec![deny(VulnScan, Fail, &[])],
            ..Accept::default()
        };
        // Pass then later fail: denied, and the requirement no longer holds.
        let e = evaluate(
            &a,
            &release("MIT"),
            &[fact(1, 1, VulnScan, Pass, 10), fact(2, 1, VulnScan, Fail, 20)],
            &roles,
        );
        let rules: Vec<&str> = e.failures.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["accept.require[0]", "accept.deny[0]"]);
        // Fail then later pass: not denied.
        let e = evaluate(
            &a,
            &release("MIT"),
            &[fact(1, 1, VulnScan, Fail, 10), fact(2, 1, VulnScan, Pass, 20)],
            &roles,
        );
        assert!(e.accepted(), "{:?}", e.failures);
        assert_eq!(e.satisfied_by, vec![[2; 32]]);
        // Same time: the greater id wins.
        let tie = [fact(9, 1, VulnScan, Fail, 10), fact(3, 1, VulnScan, Pass, 10)];
        assert_eq!(current(&tie), vec![&tie[0]]);
        assert!(!evaluate(&a, &release("MIT"), &tie, &roles).accepted());
        let tie = [fact(3, 1, VulnScan, Fail, 10), fact(9, 1, VulnScan, Pass, 10)];
        assert!(evaluate(&a, &release("MIT"), &tie, &roles).accepted());
    }

    #[test]
    fn current_is_sorted_and_per_kind() {
        let facts = [
            fact(1, 2, Review, Pass, 1),
            fact(2, 1, Review, Pass, 1),
            fact(3, 1, Audit, Pass, 1),
        ];
        let now = current(&facts);
        let order: Vec<(PublicKey, AttestationKind)> = now.iter().map(|a| (a.attester, a.kind)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(now.len(), 3);
    }

    #[test]
    fn evaluate_all_prefixes_and_combines() {
        let federation = Accept {
            require: vec![require(Audit, Pass, 1, &[])],
            ..Accept::default()
        };
        let local = Accept {
            min_quality: 60,
            ..Accept::default()
        };
        let facts = [fact(5, 1, Audit, Pass, 1)];
        let e = evaluate_all(
            &[("federation v3", &federation), ("local (policy.toml)", &local)],
            &release("MIT"),
            &facts,
            &roles,
        );
        assert_eq!(
            e.failures,
            vec![Failure {
                rule: "local (policy.toml): accept.min_quality".into(),
                reason: "quality 50 is below the minimum 60".into()
            }]
        );
        assert_eq!(e.satisfied_by, vec![[5; 32]]);
        let e = evaluate_all(&[("federation (genesis)", &federation)], &release("MIT"), &[], &roles);
        assert_eq!(e.failures[0].rule, "federation (genesis): accept.require[0]");
    }

    fn arb_fact() -> impl Strategy<Value = AttestationFact> {
        (
            0u8..6,
            1u8..7,
            prop::sample::select(vec![Audit, VulnScan, Review]),
            prop::bool::ANY,
            0u64..4,
        )
            .prop_map(|(id, attester, kind, pass, time)| fact(id, attester, kind, if pass { Pass } else { Fail }, time))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn order_and_duplication_do_not_matter(
            (facts, perm) in (prop::collection::vec(arb_fact(), 0..12), prop::collection::vec(0usize..64, 0..6))
                .prop_flat_map(|(facts, dups)| {
                    // The second list is the first plus some duplicates, in a shuffled order.
                    let mut with_dups: Vec<usize> = (0..facts.len()).collect();
                    if !facts.is_empty() {
                        with_dups.extend(dups.iter().map(|d| d % facts.len()));
                    }
                    (Just(facts), Just(with_dups).prop_shuffle())
                }),
        ) {
            let a = Accept {
                require: vec![
                    require(Audit, Pass, 2, &[Role::Security]),
                    require(Review, Pass, 1, &[]),
                ],
                deny: vec![deny(VulnScan, Fail, &[])],
                ..Accept::default()
            };
            let base = evaluate(&a, &release("MIT"), &facts, &roles);
            let shuffled: Vec<AttestationFact> = perm.iter().map(|&i| facts[i].clone()).collect();
            prop_assert_eq!(evaluate(&a, &release("MIT"), &shuffled, &roles), base);
        }
    }
}
