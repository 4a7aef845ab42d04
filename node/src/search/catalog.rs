//! The search catalog: what the node knows about every release beyond its
//! text (visibility, verdict, yank, attestations, installs), in memory, so a
//! query can filter and rank hundreds of thousands of candidates without
//! touching sled. Pure: the indexer fills it from the store; nothing here
//! does I/O.
//!
//! Text never changes (a release is immutable), so the tantivy index only
//! ever gains documents; everything that can change lives here and is
//! replaced package by package.

use std::collections::HashMap;
use std::sync::Arc;

use packfed_protocol::records::ATTESTATION_KINDS;
use packfed_protocol::{ContentHash, RecordId};

use crate::learn::model::FEATURES;

/// The key that ties a tantivy document to its catalog entry: the first 8
/// bytes of the release record id. A second preimage of 64 bits of BLAKE3 is
/// out of reach; two records of one publisher that collide only hide one of
/// that publisher's own releases, and [`Catalog::replace_package`] refuses
/// the second.
pub fn doc_key(rid: &RecordId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&rid.0[..8]);
    u64::from_le_bytes(b)
}

/// Bit of an attestation kind in [`Entry::kinds`].
pub fn kind_bit(kind: &str) -> Option<u16> {
    ATTESTATION_KINDS.iter().position(|k| *k == kind).map(|i| 1u16 << i)
}

/// One release record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: u64,
    pub rid: RecordId,
    pub name: Arc<str>,
    pub version: semver::Version,
    pub description: String,
    // Category, license and tier repeat across releases: shared, not copied
    // per entry (see `Interner`).
    pub category: Arc<str>,
    /// The SPDX expression as signed.
    pub license: Arc<str>,
    /// Lowercase SPDX ids in the expression (what `--license` matches).
    pub license_ids: Arc<[Arc<str>]>,
    pub tier: Arc<str>,
    pub hash: ContentHash,
    pub quality: u32,
    pub published_ms: u64,
    /// Signed by the namespace owner (the only releases anyone sees).
    pub visible: bool,
    pub yanked: bool,
    pub accepted: bool,
    /// Org visibility: shown only to this node's users and its org peers.
    pub org: bool,
    /// Distinct members whose current attestation passes.
    pub attesters: u32,
    /// Kinds with at least one current passing attestation by a member.
    pub kinds: u16,
    /// Installs and failed installs from the learning aggregates.
    pub installs: u64,
    pub failed_installs: u64,
    /// The ranking features but text, as of when the entry was made: the
    /// first-pass factor ([`Hot`]) is computed from them once per entry,
    /// not per matching document.
    pub signals: [f64; FEATURES],
}

/// What a query asks to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub category: Option<String>,
    /// One SPDX id, lowercase.
    pub license: Option<String>,
    pub tier: Option<String>,
    /// Bit of the attestation kind required.
    pub attested: Option<u16>,
    pub include_quarantined: bool,
    pub all_versions: bool,
    /// Whether org releases may be shown (false when answering an outsider).
    pub include_org: bool,
}

impl Filters {
    /// For filters that only choose quarantine and org visibility (the
    /// common case), the bit of [`Hot::shown`] that answers
    /// [`Catalog::shown`] without looking at the other versions.
    pub fn fast_slot(&self) -> Option<usize> {
        let plain = self.category.is_none()
            && self.license.is_none()
            && self.tier.is_none()
            && self.attested.is_none()
            && !self.all_versions;
        plain.then_some(usize::from(self.include_quarantined) * 2 + usize::from(self.include_org))
    }

    /// Whether `e` passes every filter, ignoring which version is shown.
    pub fn admits(&self, e: &Entry) -> bool {
        e.visible
            && !e.yanked
            && (e.accepted || self.include_quarantined)
            && (!e.org || self.include_org)
            && self
                .category
                .as_ref()
                .is_none_or(|c| e.category.eq_ignore_ascii_case(c))
            && self.tier.as_ref().is_none_or(|t| e.tier.eq_ignore_ascii_case(t))
            && self
                .license
                .as_ref()
                .is_none_or(|l| e.license_ids.iter().any(|i| **i == **l))
            && self.attested.is_none_or(|bit| e.kinds & bit != 0)
    }
}

/// Hashes document keys (already uniform: they are BLAKE3 output) with a
/// per-process secret, so no one can grind record ids into one bucket.
#[derive(Clone)]
pub struct KeyHasherBuilder(u64);

impl Default for KeyHasherBuilder {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        KeyHasherBuilder(u64::from_le_bytes(seed) | 1)
    }
}

pub struct KeyHasher(u64, u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        (self.1 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.1 = (self.1 ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.1 ^= k;
    }
}

impl std::hash::BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0, 0)
    }
}

/// Shares the strings many entries repeat (categories, licenses, tiers) and
/// the parsed ids of each license expression: at 100k releases, copies cost
/// ~20 MB. Holds each distinct string once, so what peers can make it hold
/// is bounded by the records they can make the node store, as without it.
#[derive(Default)]
pub struct Interner {
    strings: std::collections::HashSet<Arc<str>>,
    license_ids: HashMap<Arc<str>, Arc<[Arc<str>]>>,
}

impl Interner {
    pub fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// The ids of license expression `expr`, parsed by `parse` once per
    /// distinct expression.
    pub fn license_ids(&mut self, expr: &Arc<str>, parse: impl FnOnce(&str) -> Vec<String>) -> Arc<[Arc<str>]> {
        if let Some(ids) = self.license_ids.get(expr) {
            return ids.clone();
        }
        let ids: Arc<[Arc<str>]> = parse(expr).iter().map(|i| self.str(i)).collect();
        self.license_ids.insert(expr.clone(), ids.clone());
        ids
    }
}

/// What a query's first pass reads for every matching document, kept apart
/// from [`Entry`] in one dense array: an [`Entry`] is ~300 bytes in a hash
/// table, and a query word common enough to match 20,000 documents paid a
/// cache miss for each.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hot {
    /// Bit `slot` set: shown under [`Filters::fast_slot`] `slot`.
    pub shown: u8,
    /// [`rank::prior_factor`](super::rank::prior_factor) of the entry under
    /// the catalog's weights.
    pub factor: f32,
}

/// Every release the node knows, by document key, with its package's
/// versions grouped.
pub struct Catalog {
    entries: HashMap<u64, Entry, KeyHasherBuilder>,
    /// Package name -> keys of its versions, newest version first.
    packages: HashMap<Arc<str>, Vec<u64>>,
    /// Key -> index into `hot`. A key keeps its slot for good (a removed
    /// entry's slot is only marked hidden), so a map from a segment's
    /// documents to slots never goes stale. Bounded like the index: one
    /// slot per release record this process has seen.
    slots: HashMap<u64, u32, KeyHasherBuilder>,
    hot: Vec<Hot>,
    weights: [f64; FEATURES],
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            entries: HashMap::default(),
            packages: HashMap::new(),
            slots: HashMap::default(),
            hot: Vec::new(),
            weights: super::rank::DEFAULT_WEIGHTS,
        }
    }
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: u64) -> Option<&Entry> {
        self.entries.get(&key)
    }

    pub fn entry_by_rid(&self, rid: &RecordId) -> Option<&Entry> {
        self.entries.get(&doc_key(rid)).filter(|e| e.rid == *rid)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.entries.contains_key(&key)
    }

    /// Replaces everything known about package `name` with `versions` (all
    /// its release records). Returns the keys of entries that collided with
    /// another package's key and were left out.
    pub fn replace_package(&mut self, name: &str, versions: Vec<Entry>) -> Vec<u64> {
        let name: Arc<str> = match self.packages.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        if let Some(old) = self.packages.remove(&name) {
            for k in old {
                self.entries.remove(&k);
                self.refresh_hot(k, None);
            }
        }
        let mut refused = Vec::new();
        let mut keys = Vec::with_capacity(versions.len());
        for mut e in versions {
            if self.entries.contains_key(&e.key) || keys.contains(&e.key) {
                refused.push(e.key);
                continue;
            }
            e.name = name.clone();
            keys.push(e.key);
            self.entries.insert(e.key, e);
        }
        if keys.is_empty() {
            return refused;
        }
        // Newest first, so the shown version is the first admitted one.
        keys.sort_by(|a, b| {
            let (ea, eb) = (&self.entries[a], &self.entries[b]);
            eb.version.cmp(&ea.version).then(ea.rid.cmp(&eb.rid))
        });
        let mut shown = vec![0u8; keys.len()];
        for slot in 0..4 {
            let f = Filters {
                include_quarantined: slot >= 2,
                include_org: slot % 2 == 1,
                ..Default::default()
            };
            if let Some(i) = keys
                .iter()
                .position(|k| self.entries.get(k).is_some_and(|e| f.admits(e)))
            {
                shown[i] |= 1 << slot;
            }
        }
        for (k, bits) in keys.iter().zip(shown) {
            self.refresh_hot(*k, Some(bits));
        }
        self.packages.insert(name, keys);
        refused
    }

    /// Brings the dense first-pass record of `key` up to date with its entry
    /// (or marks it hidden when there is none): the factor always, the shown
    /// bits when given (only a package's whole set of versions decides them).
    fn refresh_hot(&mut self, key: u64, shown: Option<u8>) {
        let hot = match self.entries.get(&key) {
            Some(e) => Hot {
                shown: shown.unwrap_or_else(|| self.slot(key).map_or(0, |s| self.hot(s).shown)),
                factor: super::rank::prior_factor(&self.weights, e),
            },
            None => Hot::default(),
        };
        match self.slots.get(&key) {
            Some(&slot) => self.hot[slot as usize] = hot,
            None if hot == Hot::default() => {}
            None => {
                self.slots.insert(key, self.hot.len() as u32);
                self.hot.push(hot);
            }
        }
    }

    /// The slot of `key` in the dense first-pass array, if it ever had one.
    pub fn slot(&self, key: u64) -> Option<u32> {
        self.slots.get(&key).copied()
    }

    /// The first-pass record in `slot` (hidden for an unknown slot).
    pub fn hot(&self, slot: u32) -> Hot {
        self.hot.get(slot as usize).copied().unwrap_or_default()
    }

    /// The ranking weights the first-pass factors and the final score use.
    pub fn weights(&self) -> [f64; FEATURES] {
        self.weights
    }

    /// Adopts new ranking weights: every first-pass factor follows.
    pub fn set_weights(&mut self, weights: [f64; FEATURES]) {
        self.weights = weights;
        let keys: Vec<u64> = self.slots.keys().copied().collect();
        for k in keys {
            self.refresh_hot(k, None);
        }
    }

    /// Whether the release under `key` is a result for `f`: it passes the
    /// filters and, unless every version is asked for, it is the newest
    /// version of its package that does.
    pub fn shown(&self, key: u64, f: &Filters) -> bool {
        let Some(e) = self.entries.get(&key) else {
            return false;
        };
        if let Some(bit) = f.fast_slot() {
            return self.slot(key).is_some_and(|s| self.hot(s).shown & (1 << bit) != 0);
        }
        if !f.admits(e) {
            return false;
        }
        if f.all_versions {
            return true;
        }
        let Some(versions) = self.packages.get(&e.name) else {
            return false;
        };
        versions
            .iter()
            .filter_map(|k| self.entries.get(k))
            .find(|v| f.admits(v))
            .is_some_and(|v| v.key == key)
    }

    /// Sets install counts of the release with content hash `hash`.
    pub fn set_installs(&mut self, hash: &ContentHash, installs: u64, failed: u64) -> usize {
        let mut changed = Vec::new();
        for e in self.entries.values_mut().filter(|e| e.hash == *hash) {
            e.installs = installs;
            e.failed_installs = failed;
            let l = (1.0 + installs as f64).ln();
            e.signals[3] = l / (l + 2.0);
            changed.push(e.key);
        }
        for k in &changed {
            self.refresh_hot(*k, None);
        }
        changed.len()
    }

    /// Package names under a namespace.
    pub fn packages_in(&self, namespace: &str) -> Vec<Arc<str>> {
        self.packages
            .keys()
            .filter(|n| n.split('/').next() == Some(namespace))
            .cloned()
            .collect()
    }

    pub fn package_names(&self) -> Vec<Arc<str>> {
        self.packages.keys().cloned().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An accepted, visible release of `name@version` whose record id starts with `n`.
    pub(crate) fn entry(name: &str, version: &str, n: u8) -> Entry {
        let mut rid = [0u8; 32];
        rid[0] = n;
        Entry {
            key: doc_key(&RecordId(rid)),
            rid: RecordId(rid),
            name: Arc::from(name),
            version: semver::Version::parse(version).unwrap(),
            description: String::new(),
            category: "web".into(),
            license: "MIT OR Apache-2.0".into(),
            license_ids: vec!["mit".into(), "apache-2.0".into()].into(),
            tier: "beta".into(),
            hash: ContentHash([n; 32]),
            quality: 50,
            published_ms: 0,
            visible: true,
            yanked: false,
            accepted: true,
            org: false,
            attesters: 0,
            kinds: 0,
            installs: 0,
            failed_installs: 0,
            signals: [0.0; 5],
        }
    }

    #[test]
    fn newest_admitted_version_is_shown() {
        let mut c = Catalog::default();
        let mut v2 = entry("a/x", "2.0.0", 2);
        v2.accepted = false;
        c.replace_package("a/x", vec![entry("a/x", "1.0.0", 1), v2, entry("a/x", "1.5.0", 3)]);
        let f = Filters::default();
        let k = |n: u8| {
            let mut r = [0u8; 32];
            r[0] = n;
            doc_key(&RecordId(r))
        };
        assert!(c.shown(k(3), &f), "1.5.0 is the newest accepted");
        assert!(!c.shown(k(1), &f));
        assert!(!c.shown(k(2), &f), "quarantined is hidden");
        let q = Filters {
            include_quarantined: true,
            ..Default::default()
        };
        assert!(c.shown(k(2), &q));
        assert!(!c.shown(k(3), &q));
        let all = Filters {
            all_versions: true,
            ..Default::default()
        };
        assert!(c.shown(k(1), &all) && c.shown(k(3), &all) && !c.shown(k(2), &all));
    }

    #[test]
    fn filters_match_fields() {
        let mut e = entry("a/x", "1.0.0", 1);
        e.kinds = kind_bit("audit").unwrap();
        let f = |f: Filters| f.admits(&e);
        assert!(f(Filters {
            license: Some("apache-2.0".into()),
            ..Default::default()
        }));
        assert!(!f(Filters {
            license: Some("gpl-3.0-only".into()),
            ..Default::default()
        }));
        assert!(f(Filters {
            category: Some("WEB".into()),
            tier: Some("beta".into()),
            attested: kind_bit("audit"),
            ..Default::default()
        }));
        assert!(!f(Filters {
            attested: kind_bit("vuln-scan"),
            ..Default::default()
        }));
        e.org = true;
        assert!(!Filters::default().admits(&e));
        assert!(
            Filters {
                include_org: true,
                ..Default::default()
            }
            .admits(&e)
        );
    }

    #[test]
    fn replacing_a_package_drops_its_old_entries_and_refuses_collisions() {
        let mut c = Catalog::default();
        c.replace_package("a/x", vec![entry("a/x", "1.0.0", 1)]);
        let refused = c.replace_package("a/y", vec![entry("a/y", "1.0.0", 1)]);
        assert_eq!(refused.len(), 1, "a key another package holds is refused");
        c.replace_package("a/x", vec![entry("a/x", "2.0.0", 2)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c.packages_in("a").len(), 1);
    }
}
