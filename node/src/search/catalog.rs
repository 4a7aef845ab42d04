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

/// What many releases share (category, license, tier): one copy per
/// distinct combination (see [`Interner`]), not four strings per entry.
#[derive(Debug)]
pub struct Facets {
    pub category: Arc<str>,
    /// The SPDX expression as signed.
    pub license: Arc<str>,
    /// Lowercase SPDX ids in the expression (what `--license` matches).
    pub license_ids: Arc<[Arc<str>]>,
    pub tier: Arc<str>,
}

/// One release record. Kept small (216 bytes): the catalog holds one
/// per release, 100,000 and more, for the life of the process.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: u64,
    pub rid: RecordId,
    pub name: Arc<str>,
    pub version: semver::Version,
    pub description: Box<str>,
    pub facets: Arc<Facets>,
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
    /// not per matching document. Single precision: they only nudge BM25.
    pub signals: [f32; FEATURES],
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
                .is_none_or(|c| e.facets.category.eq_ignore_ascii_case(c))
            && self.tier.as_ref().is_none_or(|t| e.facets.tier.eq_ignore_ascii_case(t))
            && self
                .license
                .as_ref()
                .is_none_or(|l| e.facets.license_ids.iter().any(|i| **i == **l))
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

/// Shares what many entries repeat: one [`Facets`] per distinct category,
/// license and tier, and the parsed ids of each license expression once. At
/// 100k releases, per-entry copies cost ~20 MB. Holds each distinct value
/// once, so what peers can make it hold is bounded by the records they can
/// make the node store, as without it.
#[derive(Default)]
pub struct Interner {
    strings: std::collections::HashSet<Arc<str>>,
    license_ids: HashMap<Arc<str>, Arc<[Arc<str>]>>,
    /// By (category, license, tier), each already interned.
    facets: HashMap<FacetKey, Arc<Facets>>,
}

type FacetKey = (Arc<str>, Arc<str>, Arc<str>);

impl Interner {
    pub fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// The shared facets of a release; `parse` turns a license expression
    /// into its ids, once per distinct expression.
    pub fn facets(
        &mut self,
        category: &str,
        license: &str,
        tier: &str,
        parse: impl FnOnce(&str) -> Vec<String>,
    ) -> Arc<Facets> {
        let key = (self.str(category), self.str(license), self.str(tier));
        if let Some(f) = self.facets.get(&key) {
            return f.clone();
        }
        let license_ids = match self.license_ids.get(&key.1) {
            Some(ids) => ids.clone(),
            None => {
                let ids: Arc<[Arc<str>]> = parse(&key.1).iter().map(|i| self.str(i)).collect();
                self.license_ids.insert(key.1.clone(), ids.clone());
                ids
            }
        };
        let f = Arc::new(Facets {
            category: key.0.clone(),
            license: key.1.clone(),
            license_ids,
            tier: key.2.clone(),
        });
        self.facets.insert(key, f.clone());
        f
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
///
/// Dense: entries live in one array by slot, and only a small key -> slot
/// map is hashed (a hash table of ~300-byte entries cost 48 MB at 100k
/// releases, half of it empty buckets).
pub struct Catalog {
    /// Key -> slot in `entries` and `hot`. A key keeps its slot for good (a
    /// removed entry's slot is only emptied and marked hidden), so a map
    /// from a segment's documents to slots never goes stale. Bounded like
    /// the index: one slot per release record this process has seen.
    slots: HashMap<u64, u32, KeyHasherBuilder>,
    entries: Vec<Option<Entry>>,
    hot: Vec<Hot>,
    /// Entries present (slots not emptied).
    len: usize,
    /// Package name -> slots of its versions, newest version first.
    packages: HashMap<Arc<str>, Vec<u32>>,
    weights: [f64; FEATURES],
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            slots: HashMap::default(),
            entries: Vec::new(),
            hot: Vec::new(),
            len: 0,
            packages: HashMap::new(),
            weights: super::rank::DEFAULT_WEIGHTS,
        }
    }
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: u64) -> Option<&Entry> {
        self.at(self.slot(key)?)
    }

    fn at(&self, slot: u32) -> Option<&Entry> {
        self.entries.get(slot as usize)?.as_ref()
    }

    pub fn entry_by_rid(&self, rid: &RecordId) -> Option<&Entry> {
        self.get(doc_key(rid)).filter(|e| e.rid == *rid)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.get(key).is_some()
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
            for slot in old {
                if self.entries[slot as usize].take().is_some() {
                    self.len -= 1;
                }
                self.hot[slot as usize] = Hot::default();
            }
        }
        let mut refused = Vec::new();
        let mut slots = Vec::with_capacity(versions.len());
        for mut e in versions {
            if self.contains(e.key) {
                refused.push(e.key);
                continue;
            }
            e.name = name.clone();
            let slot = match self.slots.get(&e.key) {
                Some(&s) => s,
                None => {
                    let s = self.entries.len() as u32;
                    self.slots.insert(e.key, s);
                    self.entries.push(None);
                    self.hot.push(Hot::default());
                    s
                }
            };
            self.entries[slot as usize] = Some(e);
            self.len += 1;
            slots.push(slot);
        }
        if slots.is_empty() {
            return refused;
        }
        // Newest first, so the shown version is the first admitted one.
        slots.sort_by(|a, b| {
            let (ea, eb) = (self.at(*a).expect("just put"), self.at(*b).expect("just put"));
            eb.version.cmp(&ea.version).then(ea.rid.cmp(&eb.rid))
        });
        let mut shown = vec![0u8; slots.len()];
        for bit in 0..4 {
            let f = Filters {
                include_quarantined: bit >= 2,
                include_org: bit % 2 == 1,
                ..Default::default()
            };
            if let Some(i) = slots.iter().position(|s| self.at(*s).is_some_and(|e| f.admits(e))) {
                shown[i] |= 1 << bit;
            }
        }
        for (slot, bits) in slots.iter().zip(shown) {
            self.refresh_hot(*slot, Some(bits));
        }
        self.packages.insert(name, slots);
        refused
    }

    /// Brings the dense first-pass record of `slot` up to date with its
    /// entry: the factor always, the shown bits when given (only a
    /// package's whole set of versions decides them).
    fn refresh_hot(&mut self, slot: u32, shown: Option<u8>) {
        let Some(e) = self.at(slot) else {
            return;
        };
        let factor = super::rank::prior_factor(&self.weights, e);
        let hot = &mut self.hot[slot as usize];
        hot.factor = factor;
        if let Some(bits) = shown {
            hot.shown = bits;
        }
    }

    /// The slot of `key` in the dense arrays, if it ever had one.
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
        for slot in 0..self.entries.len() as u32 {
            self.refresh_hot(slot, None);
        }
    }

    /// Whether the release under `key` is a result for `f`: it passes the
    /// filters and, unless every version is asked for, it is the newest
    /// version of its package that does.
    pub fn shown(&self, key: u64, f: &Filters) -> bool {
        let Some(slot) = self.slot(key) else {
            return false;
        };
        if let Some(bit) = f.fast_slot() {
            return self.hot(slot).shown & (1 << bit) != 0;
        }
        let Some(e) = self.at(slot).filter(|e| f.admits(e)) else {
            return false;
        };
        if f.all_versions {
            return true;
        }
        let Some(versions) = self.packages.get(&e.name) else {
            return false;
        };
        versions
            .iter()
            .filter_map(|s| self.at(*s))
            .find(|v| f.admits(v))
            .is_some_and(|v| v.key == key)
    }

    /// Sets install counts of the release with content hash `hash`.
    pub fn set_installs(&mut self, hash: &ContentHash, installs: u64, failed: u64) -> usize {
        let mut changed = Vec::new();
        for (slot, e) in self.entries.iter_mut().enumerate() {
            let Some(e) = e.as_mut().filter(|e| e.hash == *hash) else {
                continue;
            };
            e.installs = installs;
            e.failed_installs = failed;
            e.signals[3] = super::rank::installs_feature(installs) as f32;
            changed.push(slot as u32);
        }
        for slot in &changed {
            self.refresh_hot(*slot, None);
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
            description: "".into(),
            facets: Arc::new(Facets {
                category: "web".into(),
                license: "MIT OR Apache-2.0".into(),
                license_ids: vec!["mit".into(), "apache-2.0".into()].into(),
                tier: "beta".into(),
            }),
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
    fn releases_share_their_facets_and_entries_stay_small() {
        let mut i = Interner::default();
        let mut parsed = 0;
        let mut parse = |e: &str| {
            parsed += 1;
            vec![e.to_ascii_lowercase()]
        };
        let a = i.facets("web", "MIT", "beta", &mut parse);
        let b = i.facets("web", "MIT", "beta", &mut parse);
        let c = i.facets("cli", "MIT", "beta", &mut parse);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c) && Arc::ptr_eq(&a.license_ids, &c.license_ids));
        assert_eq!(parsed, 1, "an expression is parsed once");
        // One per release for the life of the process (see `Entry`).
        assert!(
            std::mem::size_of::<Option<Entry>>() <= 216,
            "{}",
            std::mem::size_of::<Entry>()
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
