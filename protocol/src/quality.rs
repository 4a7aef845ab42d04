//! Quality guards: a weighted 0-100 score and a maturity tier, computed from
//! an archive's manifest and file listing alone, so any node can recompute
//! them and nobody has to trust a publisher's claim.
//!
//! | guard     | weight | passes when |
//! |-----------|--------|-------------|
//! | metadata  | 20 | description of 20+ characters, a keyword, a category and an author |
//! | license   | 15 | a LICENSE, LICENSE.* or COPYING file at the root (the SPDX id itself is required by the manifest) |
//! | readme    | 15 | a README, README.md or README.txt at the root of 100+ bytes |
//! | tests     | 15 | at least one file under `tests/` |
//! | templates | 20 | at least one file under `templates/` or `ontologies/`, and a description for every declared variable |
//! | examples  | 15 | at least one file under `examples/` |
//!
//! Tiers: below 40 experimental, 40-69 beta, 70-89 production, 90+ enterprise.

use crate::archive::{EntryInfo, EntryKind};
use crate::manifest::Manifest;
use crate::pb;

/// Maturity tier derived from the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Experimental,
    Beta,
    Production,
    Enterprise,
}

impl Tier {
    pub fn from_score(score: u32) -> Tier {
        match score {
            0..=39 => Tier::Experimental,
            40..=69 => Tier::Beta,
            70..=89 => Tier::Production,
            _ => Tier::Enterprise,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Experimental => "experimental",
            Tier::Beta => "beta",
            Tier::Production => "production",
            Tier::Enterprise => "enterprise",
        }
    }
    pub fn parse(s: &str) -> Option<Tier> {
        [Tier::Experimental, Tier::Beta, Tier::Production, Tier::Enterprise]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

fn files(entries: &[EntryInfo]) -> impl Iterator<Item = &EntryInfo> {
    entries.iter().filter(|e| e.kind == EntryKind::File)
}

fn root_file<'a>(entries: &'a [EntryInfo], names: &[&str]) -> Option<&'a EntryInfo> {
    files(entries).find(|e| names.iter().any(|n| e.path.eq_ignore_ascii_case(n)))
}

fn any_under(entries: &[EntryInfo], dirs: &[&str]) -> usize {
    files(entries)
        .filter(|e| dirs.iter().any(|d| e.path.starts_with(&format!("{d}/"))))
        .count()
}

fn guard(name: &str, weight: u32, passed: bool, detail: String) -> pb::QualityGuard {
    pb::QualityGuard {
        name: name.to_string(),
        weight,
        passed,
        detail,
    }
}

/// Computes the quality report of a pack.
pub fn assess(manifest: &Manifest, entries: &[EntryInfo]) -> pb::QualityReport {
    let mut missing = Vec::new();
    if manifest.description.chars().count() < 20 {
        missing.push("a description of 20+ characters");
    }
    if manifest.keywords.is_empty() {
        missing.push("keywords");
    }
    if manifest.category.is_empty() {
        missing.push("a category");
    }
    if manifest.authors.is_empty() {
        missing.push("authors");
    }
    let metadata = if missing.is_empty() {
        "complete".to_string()
    } else {
        format!("missing {}", missing.join(", "))
    };
    let license = root_file(
        entries,
        &[
            "LICENSE",
            "LICENSE.md",
            "LICENSE.txt",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "COPYING",
        ],
    );
    let readme = root_file(entries, &["README", "README.md", "README.txt"]);
    let readme_ok = readme.is_some_and(|r| r.size >= 100);
    let tests = any_under(entries, &["tests", "test"]);
    let templates = any_under(entries, &["templates", "ontologies"]);
    let examples = any_under(entries, &["examples"]);
    // A variable a user cannot understand from its prompt is a defect of
    // the templates.
    let undescribed: Vec<&str> = manifest
        .variables
        .iter()
        .filter(|v| v.description.trim().is_empty())
        .map(|v| v.name.as_str())
        .collect();

    let guards = vec![
        guard("metadata", 20, missing.is_empty(), metadata),
        guard(
            "license",
            15,
            license.is_some(),
            match license {
                Some(l) => format!("{} ({})", l.path, manifest.license),
                None => "no LICENSE or COPYING file at the root".into(),
            },
        ),
        guard(
            "readme",
            15,
            readme_ok,
            match readme {
                Some(r) if readme_ok => format!("{} ({} bytes)", r.path, r.size),
                Some(r) => format!("{} has only {} bytes (100 needed)", r.path, r.size),
                None => "no README at the root".into(),
            },
        ),
        guard("tests", 15, tests > 0, format!("{tests} files under tests/")),
        guard("templates", 20, templates > 0 && undescribed.is_empty(), {
            let mut detail = format!("{templates} files under templates/ or ontologies/");
            if !manifest.variables.is_empty() {
                detail.push_str(&format!(", {} variables", manifest.variables.len()));
            }
            if !undescribed.is_empty() {
                detail.push_str(&format!(
                    "; variables without a description: {}",
                    undescribed.join(", ")
                ));
            }
            detail
        }),
        guard(
            "examples",
            15,
            examples > 0,
            format!("{examples} files under examples/"),
        ),
    ];
    let score = guards.iter().filter(|g| g.passed).map(|g| g.weight).sum();
    pb::QualityReport {
        score,
        tier: Tier::from_score(score).as_str().to_string(),
        guards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> EntryInfo {
        EntryInfo {
            path: path.into(),
            kind: EntryKind::File,
            size,
            hash: None,
            executable: false,
        }
    }

    #[test]
    fn full_marks_and_tiers() {
        let m = Manifest::parse(
            "[pack]\nname=\"a/b\"\nversion=\"1.0.0\"\ndescription=\"templates for a REST service\"\nlicense=\"MIT\"\nkeywords=[\"rest\"]\ncategory=\"web\"\nauthors=[\"x\"]\n",
        )
        .unwrap();
        let all = vec![
            file("LICENSE", 10),
            file("README.md", 500),
            file("tests/t.txt", 1),
            file("templates/a.tmpl", 1),
            file("examples/e.txt", 1),
        ];
        let q = assess(&m, &all);
        assert_eq!(q.score, 100);
        assert_eq!(q.tier, "enterprise");
        let q = assess(&m, &all[..2]);
        assert_eq!(q.score, 50);
        assert_eq!(q.tier, "beta");
        let q = assess(&m, &[file("README.md", 10)]);
        assert_eq!(q.score, 20);
        assert_eq!(q.tier, "experimental");
        assert!(q.guards[2].detail.contains("100 needed"));
    }
}
