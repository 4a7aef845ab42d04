//! A query's first pass: for every document that matches the text, whether
//! it is a result and its BM25 nudged by the catalog's signals. It runs once
//! per matching document (20,000 for a common word at 100k releases), so
//! the common case reads two dense arrays in document order instead of
//! looking each document's key up in the catalog:
//! - per segment, document -> catalog slot ([`SlotMaps`]): a segment's
//!   documents never change and a key never changes slot, so the map is
//!   built once per segment and kept;
//! - per slot, the catalog's [`Hot`](super::catalog::Hot) record.
//!
//! The catalog's read lock is taken once per segment, not per document.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use parking_lot::RwLock;
use tantivy::index::SegmentId;
use tantivy::{DocId, Score};

use super::catalog::{Catalog, Filters};
use super::index::SegmentKeys;

/// Slot maps kept at most; more than the segments of one index (merges
/// replace segments, and the maps of merged-away ones are dropped).
const MAX_MAPS: usize = 64;
/// A document whose key has no catalog slot.
const NO_SLOT: u32 = u32::MAX;

/// Each segment's document -> catalog slot map.
#[derive(Default)]
pub struct SlotMaps {
    maps: Mutex<HashMap<SegmentId, Arc<[u32]>>>,
}

impl SlotMaps {
    /// The slots of `seg`'s documents. A map with a document the catalog
    /// does not know yet is not kept (its entry may arrive later).
    fn of(&self, seg: &SegmentKeys, catalog: &Catalog) -> Arc<[u32]> {
        if let Some(m) = self.maps.lock().ok().and_then(|m| m.get(&seg.id).cloned()) {
            return m;
        }
        let map: Arc<[u32]> = (0..seg.max_doc)
            .map(|doc| catalog.slot(seg.get(doc)).unwrap_or(NO_SLOT))
            .collect();
        if !map.contains(&NO_SLOT)
            && let Ok(mut maps) = self.maps.lock()
        {
            if maps.len() >= MAX_MAPS {
                maps.clear();
            }
            maps.insert(seg.id, map.clone());
        }
        map
    }
}

/// The per-segment scorer builder for [`TextIndex::candidates`](super::index::TextIndex::candidates).
pub fn scorer(
    catalog: Arc<RwLock<Catalog>>,
    maps: Arc<SlotMaps>,
    filters: Filters,
) -> impl Fn(&SegmentKeys) -> Box<dyn Fn(DocId, Score) -> Option<f32>> + Send + Sync + 'static {
    move |seg: &SegmentKeys| {
        let c = catalog.read_arc();
        match filters.fast_slot() {
            Some(bit) => {
                let slots = maps.of(seg, &c);
                Box::new(move |doc, bm25| {
                    let slot = slots.get(doc as usize).copied().unwrap_or(NO_SLOT);
                    let hot = c.hot(slot);
                    ((hot.shown >> bit) & 1 == 1).then_some(bm25 * hot.factor)
                })
            }
            None => {
                let (seg, filters) = (seg.clone(), filters.clone());
                Box::new(move |doc, bm25| {
                    let key = seg.get(doc);
                    if !c.shown(key, &filters) {
                        return None;
                    }
                    Some(bm25 * c.hot(c.slot(key)?).factor)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::catalog::tests::entry;
    use crate::search::rank;

    #[test]
    fn the_dense_record_agrees_with_the_entry() {
        let mut c = Catalog::default();
        let mut old = entry("a/x", "1.0.0", 1);
        old.signals = [1.0, 0.9, 0.5, 0.0, 0.2];
        let mut new = entry("a/x", "2.0.0", 2);
        new.signals = [1.0, 0.1, 0.0, 0.0, 0.9];
        c.replace_package("a/x", vec![old.clone(), new.clone()]);
        let f = Filters::default();
        let bit = f.fast_slot().unwrap();
        for e in [&old, &new] {
            let hot = c.hot(c.slot(e.key).unwrap());
            // Only the newest version is shown, on both paths.
            assert_eq!((hot.shown >> bit) & 1 == 1, e.key == new.key);
            assert_eq!(c.shown(e.key, &f), e.key == new.key);
            let stored = c.get(e.key).unwrap();
            assert_eq!(
                3.0 * hot.factor,
                rank::prior(&rank::DEFAULT_WEIGHTS, stored, 3.0),
                "the same score as the entry gives"
            );
        }
        // The package loses its newest version: the older one is shown, the
        // dropped one keeps its slot, hidden.
        let slot = c.slot(new.key).unwrap();
        c.replace_package("a/x", vec![old.clone()]);
        assert_eq!(c.hot(slot).shown, 0);
        assert_eq!(c.slot(new.key), Some(slot));
        assert!((c.hot(c.slot(old.key).unwrap()).shown >> bit) & 1 == 1);
        // Install counts move the factor and keep what is shown.
        let shown = c.hot(c.slot(old.key).unwrap()).shown;
        c.set_installs(&old.hash, 500, 0);
        assert_eq!(c.hot(c.slot(old.key).unwrap()).shown, shown);
        // New weights move every factor.
        let before = c.hot(c.slot(old.key).unwrap()).factor;
        c.set_weights([1.0, 0.0, 0.0, 0.0, 5.0]);
        assert_ne!(c.hot(c.slot(old.key).unwrap()).factor, before);
    }

    /// The slot map of a segment is kept across queries: a newer version
    /// arriving in a later segment must still hide the older one in the
    /// cached segment, and a version dropped from the catalog disappears.
    #[test]
    fn cached_segment_maps_follow_catalog_changes() {
        use crate::search::index::{DocText, TextIndex};
        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = TextIndex::open(&dir.path().join("index")).unwrap();
        let catalog = Arc::new(RwLock::new(Catalog::default()));
        let maps = Arc::new(SlotMaps::default());
        let doc = |e: &crate::search::catalog::Entry| DocText {
            key: e.key,
            name: e.name.to_string(),
            keywords: vec!["widget".into()],
            description: String::new(),
            category: "web".into(),
        };
        let found = |ix: &TextIndex| -> Vec<u64> {
            let q = ix.parse("widget");
            let scorer = scorer(catalog.clone(), maps.clone(), Filters::default());
            ix.candidates(&q, 10, scorer).unwrap().iter().map(|c| c.key).collect()
        };
        let v1 = entry("a/x", "1.0.0", 1);
        catalog.write().replace_package("a/x", vec![v1.clone()]);
        ix.add(&[doc(&v1)]).unwrap();
        ix.commit().unwrap();
        assert_eq!(found(&ix), vec![v1.key]);
        assert_eq!(maps.maps.lock().unwrap().len(), 1, "the segment's map is kept");

        let v2 = entry("a/x", "2.0.0", 2);
        catalog.write().replace_package("a/x", vec![v1.clone(), v2.clone()]);
        ix.add(&[doc(&v2)]).unwrap();
        ix.commit().unwrap();
        assert_eq!(found(&ix), vec![v2.key], "the newer version hides the older");

        catalog.write().replace_package("a/x", vec![v1.clone()]);
        assert_eq!(found(&ix), vec![v1.key], "the dropped version is gone");

        // A document whose entry is not in the catalog yet is no result,
        // and its segment's map is not kept.
        let other = entry("b/y", "1.0.0", 3);
        ix.add(&[doc(&other)]).unwrap();
        ix.commit().unwrap();
        let kept = maps.maps.lock().unwrap().len();
        assert_eq!(found(&ix), vec![v1.key]);
        catalog.write().replace_package("b/y", vec![other.clone()]);
        let mut both = found(&ix);
        both.sort_unstable();
        let mut want = vec![v1.key, other.key];
        want.sort_unstable();
        assert_eq!(both, want, "found once the catalog knows it");
        assert!(maps.maps.lock().unwrap().len() > kept);
    }
}
