//! The full-text index (tantivy) over every release record's text: one
//! document per record, added once (a release never changes) and found again
//! by its [`doc_key`](super::catalog::doc_key).
//!
//! Fields and how a query meets them:
//! - `name`: the words of `namespace/name` (`acme/rest-api` -> acme, rest,
//!   api), exact (boost 4) and fuzzy (boost 2);
//! - `slug`: the whole name, its short form and that form without its
//!   hyphens (`httpcore`), lowercase, matched against the whole query with
//!   typos allowed (`rest-apj` -> `rest-api`, boost 6) and as a prefix of
//!   4+ letters (`postg` -> `postgres-kit`, boost 3);
//! - a word of 4+ letters also matches as the start of a name word or
//!   keyword (`kube` -> `kubernetes`); two adjacent words also match as one
//!   (`http core` -> `httpcore`), so a compound is found from either spelling;
//! - `keywords` exact (2.5) and fuzzy (1.2), `category` (1.5), `description`
//!   stemmed (1).
//!
//! Every query word must match some field (fuzzily on names and keywords),
//! or the whole query must match a slug. Typos allowed: none below 4
//! letters, one up to 7, two from 8.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument, Term};

/// Bump when the schema or analyzers change: an index of another version is
/// rebuilt from sled.
const SCHEMA_VERSION: &str = "packfed-search-2";
const VERSION_FILE: &str = "packfed-schema";
/// Indexing arena; tantivy needs at least 15 MB per thread.
const WRITER_ARENA: usize = 32 * 1024 * 1024;
/// Longest word indexed (longer ones are noise, and unbounded input).
const MAX_WORD: usize = 40;

/// The text of one release, as indexed.
#[derive(Debug, Clone)]
pub struct DocText {
    pub key: u64,
    pub name: String,
    pub keywords: Vec<String>,
    pub description: String,
    pub category: String,
}

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    name: Field,
    slug: Field,
    keywords: Field,
    description: Field,
    category: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |tokenizer: &str, positions: bool| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(if positions {
                    IndexRecordOption::WithFreqsAndPositions
                } else {
                    IndexRecordOption::WithFreqs
                }),
        )
    };
    let fields = Fields {
        key: b.add_u64_field("key", FAST | INDEXED | STORED),
        name: b.add_text_field("name", text("pf_words", false)),
        slug: b.add_text_field("slug", text("pf_raw", false)),
        keywords: b.add_text_field("keywords", text("pf_words", false)),
        description: b.add_text_field("description", text("pf_text", false)),
        category: b.add_text_field("category", text("pf_raw", false)),
    };
    (b.build(), fields)
}

fn analyzers() -> [(&'static str, TextAnalyzer); 3] {
    let words = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD))
        .filter(LowerCaser)
        .build();
    let raw = TextAnalyzer::builder(RawTokenizer::default())
        .filter(RemoveLongFilter::limit(200))
        .filter(LowerCaser)
        .build();
    let stop = StopWordFilter::new(Language::English).unwrap_or_else(|| StopWordFilter::remove(Vec::new()));
    let prose = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD))
        .filter(LowerCaser)
        .filter(stop)
        .filter(Stemmer::new(Language::English))
        .build();
    [("pf_words", words), ("pf_raw", raw), ("pf_text", prose)]
}

/// Failures of the index. The node answers them by rebuilding from sled.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: {0}")]
    Other(String),
}

/// One candidate of a query: its key, its BM25 and its first-pass score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub first_pass: f32,
    pub bm25: f32,
    pub key: u64,
}

/// What the collector orders documents by (the first-pass score), and the
/// BM25 it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FirstPass {
    score: f32,
    bm25: f32,
}

impl PartialOrd for FirstPass {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.score.partial_cmp(&other.score)
    }
}

/// One segment's document keys, as a query's first pass sees them.
#[derive(Clone)]
pub struct SegmentKeys {
    pub id: tantivy::index::SegmentId,
    pub max_doc: DocId,
    keys: Option<std::sync::Arc<dyn tantivy::columnar::ColumnValues<u64>>>,
}

impl SegmentKeys {
    fn of(seg: &SegmentReader) -> SegmentKeys {
        SegmentKeys {
            id: seg.segment_id(),
            max_doc: seg.max_doc(),
            keys: seg.fast_fields().u64("key").ok().map(|c| c.first_or_default_col(0)),
        }
    }

    /// The key of document `doc` (0 if the column is unreadable).
    pub fn get(&self, doc: DocId) -> u64 {
        self.keys.as_ref().map(|c| c.get_val(doc)).unwrap_or(0)
    }
}

/// A parsed query: what [`TextIndex::candidates`] runs.
pub struct ParsedQuery {
    query: Box<dyn Query>,
    pub words: Vec<String>,
}

/// The index and its single writer.
pub struct TextIndex {
    dir: PathBuf,
    reader: IndexReader,
    writer: std::sync::Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    words: TextAnalyzer,
    raw: TextAnalyzer,
    prose: TextAnalyzer,
}

/// Shortest word matched as the start of a longer one.
const MIN_PREFIX: usize = 4;

fn typos(len: usize) -> u8 {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

fn tokens(analyzer: &TextAnalyzer, text: &str) -> Vec<String> {
    let mut a = analyzer.clone();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

fn boosted(q: impl Query + 'static, boost: f32) -> (Occur, Box<dyn Query>) {
    (Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost)))
}

impl TextIndex {
    /// Opens the index in `dir`, or creates an empty one. Returns whether it
    /// was (re)created: a missing, unreadable or other-version index is
    /// wiped, and the caller re-adds every release.
    pub fn open(dir: &Path) -> Result<(TextIndex, bool), IndexError> {
        let version_ok = std::fs::read_to_string(dir.join(VERSION_FILE)).is_ok_and(|v| v.trim() == SCHEMA_VERSION);
        if version_ok {
            match Self::open_existing(dir) {
                Ok(ix) => return Ok((ix, false)),
                Err(e) => tracing::warn!(error = %e, dir = %dir.display(), "search index unreadable; rebuilding it"),
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let (schema, _) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        let ix = Self::with_index(dir, index)?;
        // Written last: an index without it is rebuilt at the next open.
        std::fs::write(dir.join(VERSION_FILE), SCHEMA_VERSION)?;
        Ok((ix, true))
    }

    fn open_existing(dir: &Path) -> Result<TextIndex, IndexError> {
        let index = Index::open_in_dir(dir)?;
        let ix = Self::with_index(dir, index)?;
        // Read every segment's keys once: a damaged file shows up here
        // rather than in the middle of a query.
        ix.keys()?;
        Ok(ix)
    }

    fn with_index(dir: &Path, index: Index) -> Result<TextIndex, IndexError> {
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Err(IndexError::Other("schema differs".into()));
        }
        let [(_, words), (_, raw), (_, prose)] = analyzers();
        for (name, a) in analyzers() {
            index.tokenizers().register(name, a);
        }
        let writer = index.writer_with_num_threads(1, WRITER_ARENA)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(TextIndex {
            dir: dir.to_path_buf(),
            reader,
            writer: std::sync::Mutex::new(writer),
            fields,
            words,
            raw,
            prose,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keys of every live document.
    pub fn keys(&self) -> Result<HashSet<u64>, IndexError> {
        let searcher = self.reader.searcher();
        let mut out = HashSet::new();
        for seg in searcher.segment_readers() {
            let col = seg.fast_fields().u64("key")?;
            for doc in 0..seg.max_doc() {
                if seg.is_deleted(doc) {
                    continue;
                }
                if let Some(k) = col.first(doc) {
                    out.insert(k);
                }
            }
        }
        Ok(out)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>>, IndexError> {
        self.writer
            .lock()
            .map_err(|_| IndexError::Other("index writer lock poisoned".into()))
    }

    /// Queues documents; they become searchable at [`TextIndex::commit`].
    pub fn add(&self, docs: &[DocText]) -> Result<(), IndexError> {
        let w = self.lock()?;
        let f = self.fields;
        for d in docs {
            let mut doc = TantivyDocument::default();
            doc.add_u64(f.key, d.key);
            doc.add_text(f.name, &d.name);
            doc.add_text(f.slug, &d.name);
            if let Some((_, short)) = d.name.split_once('/') {
                doc.add_text(f.slug, short);
                // The compound spelling: `http-core` is also `httpcore`.
                if short.contains('-') {
                    doc.add_text(f.slug, short.replace('-', ""));
                }
            }
            for k in &d.keywords {
                doc.add_text(f.keywords, k);
            }
            doc.add_text(f.description, &d.description);
            doc.add_text(f.category, &d.category);
            w.add_document(doc)?;
        }
        Ok(())
    }

    /// Removes documents (a record the store no longer holds).
    pub fn delete(&self, keys: &[u64]) -> Result<(), IndexError> {
        let w = self.lock()?;
        for k in keys {
            w.delete_term(Term::from_field_u64(self.fields.key, *k));
        }
        Ok(())
    }

    /// Makes queued changes durable and searchable.
    pub fn commit(&self) -> Result<(), IndexError> {
        self.lock()?.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Parses a user query. An empty query matches everything (browsing by
    /// filters).
    pub fn parse(&self, text: &str) -> ParsedQuery {
        let f = self.fields;
        let words: Vec<String> = tokens(&self.words, text).into_iter().take(16).collect();
        if words.is_empty() {
            return ParsedQuery {
                query: Box::new(AllQuery),
                words,
            };
        }
        // Stopwords ("for", "the") match no description and rarely a name:
        // requiring them would empty the results. Kept only if nothing else is left.
        let content: Vec<&String> = words.iter().filter(|w| !tokens(&self.prose, w).is_empty()).collect();
        let required: Vec<&String> = if content.is_empty() {
            words.iter().collect()
        } else {
            content
        };
        let mut per_word: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for w in required {
            let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            let name = Term::from_field_text(f.name, w);
            let kw = Term::from_field_text(f.keywords, w);
            any.push(boosted(TermQuery::new(name.clone(), IndexRecordOption::WithFreqs), 4.0));
            any.push(boosted(TermQuery::new(kw.clone(), IndexRecordOption::WithFreqs), 2.5));
            let d = typos(w.chars().count());
            if d > 0 {
                any.push(boosted(FuzzyTermQuery::new(name.clone(), d, true), 2.0));
                any.push(boosted(FuzzyTermQuery::new(kw.clone(), d, true), 1.2));
            }
            // The first letters of a word, as a user types them.
            if w.chars().count() >= MIN_PREFIX {
                any.push(boosted(FuzzyTermQuery::new_prefix(name, 0, true), 1.5));
                any.push(boosted(FuzzyTermQuery::new_prefix(kw, 0, true), 1.0));
            }
            any.push(boosted(
                TermQuery::new(Term::from_field_text(f.category, w), IndexRecordOption::Basic),
                1.5,
            ));
            for stem in tokens(&self.prose, w) {
                any.push(boosted(
                    TermQuery::new(
                        Term::from_field_text(f.description, &stem),
                        IndexRecordOption::WithFreqs,
                    ),
                    1.0,
                ));
            }
            per_word.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        let mut top: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, Box::new(BooleanQuery::new(per_word)))];
        // The whole query against whole names, typos allowed.
        if let Some(whole) = tokens(&self.raw, text.trim()).into_iter().next() {
            let term = Term::from_field_text(f.slug, &whole);
            top.push(boosted(TermQuery::new(term.clone(), IndexRecordOption::Basic), 6.0));
            let d = typos(whole.chars().count().saturating_sub(1));
            if d > 0 {
                top.push(boosted(FuzzyTermQuery::new(term.clone(), d, true), 5.0));
            }
            if whole.chars().count() >= MIN_PREFIX {
                top.push(boosted(FuzzyTermQuery::new_prefix(term, 0, true), 3.0));
            }
        }
        // Two words typed apart may be one compound name (`http core`).
        for pair in words.windows(2) {
            let joined = format!("{}{}", pair[0], pair[1]);
            top.push(boosted(
                TermQuery::new(Term::from_field_text(f.slug, &joined), IndexRecordOption::Basic),
                5.0,
            ));
            top.push(boosted(
                TermQuery::new(Term::from_field_text(f.name, &joined), IndexRecordOption::WithFreqs),
                3.0,
            ));
        }
        ParsedQuery {
            query: Box::new(BooleanQuery::new(top)),
            words,
        }
    }

    /// The `k` best documents by their first-pass score, best first.
    /// `first_pass` is called once per segment with the segment's keys, and
    /// returns the per-document scorer: `(doc, bm25)` -> None for a document
    /// that is not a result (filtered, hidden, an older version).
    pub fn candidates<S, F>(&self, q: &ParsedQuery, k: usize, first_pass: S) -> Result<Vec<Candidate>, IndexError>
    where
        S: Fn(&SegmentKeys) -> F + Send + Sync + 'static,
        F: Fn(DocId, Score) -> Option<f32> + 'static,
    {
        let searcher = self.reader.searcher();
        let collector = TopDocs::with_limit(k.max(1)).tweak_score(move |seg: &SegmentReader| {
            let score = first_pass(&SegmentKeys::of(seg));
            move |doc: DocId, bm25: Score| FirstPass {
                score: score(doc, bm25).unwrap_or(f32::NEG_INFINITY),
                bm25,
            }
        });
        let top = searcher.search(&q.query, &collector)?;
        let mut keys: Vec<Option<SegmentKeys>> = vec![None; searcher.segment_readers().len()];
        let mut out = Vec::with_capacity(top.len());
        for (c, addr) in top {
            if c.score == f32::NEG_INFINITY {
                continue;
            }
            let seg = addr.segment_ord as usize;
            let Some(slot) = keys.get_mut(seg) else { continue };
            let sk = slot.get_or_insert_with(|| SegmentKeys::of(searcher.segment_reader(addr.segment_ord)));
            out.push(Candidate {
                first_pass: c.score,
                bm25: c.bm25,
                key: sk.get(addr.doc_id),
            });
        }
        Ok(out)
    }

    /// Number of segments a query visits.
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// Number of live documents.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The stored key of a document (tests).
    #[cfg(test)]
    fn stored_key(&self, addr: tantivy::DocAddress) -> Option<u64> {
        use tantivy::schema::Value;
        let doc: TantivyDocument = self.reader.searcher().doc(addr).ok()?;
        doc.get_first(self.fields.key).and_then(|v| v.as_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(key: u64, name: &str, keywords: &[&str], description: &str, category: &str) -> DocText {
        DocText {
            key,
            name: name.into(),
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            description: description.into(),
            category: category.into(),
        }
    }

    fn index() -> (tempfile::TempDir, TextIndex) {
        let dir = tempfile::tempdir().unwrap();
        let (ix, created) = TextIndex::open(&dir.path().join("index")).unwrap();
        assert!(created);
        ix.add(&[
            doc(1, "acme/rest-api", &["rest", "http"], "REST handler templates", "web"),
            doc(
                2,
                "acme/graphql-kit",
                &["graphql", "api"],
                "GraphQL schema helpers",
                "web",
            ),
            doc(
                3,
                "beta/orm-tools",
                &["sql"],
                "Templates for a rest api over SQL tables",
                "db",
            ),
            doc(
                4,
                "kube/operator",
                &["kubernetes"],
                "A kubernetes operator scaffold",
                "cloud",
            ),
        ])
        .unwrap();
        ix.commit().unwrap();
        (dir, ix)
    }

    fn keys(ix: &TextIndex, q: &str) -> Vec<u64> {
        let q = ix.parse(q);
        ix.candidates(&q, 10, |_| |_, s| Some(s))
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect()
    }

    #[test]
    fn first_letters_and_compounds_find_names_both_ways() {
        let (_d, ix) = index();
        // A word's first 4+ letters.
        assert_eq!(keys(&ix, "kube").first(), Some(&4));
        assert_eq!(keys(&ix, "graph").first(), Some(&2));
        assert_eq!(keys(&ix, "oper").first(), Some(&4));
        // Three letters are too few to mean a prefix.
        assert!(!keys(&ix, "gra").contains(&2));
        // Compound written apart finds the joined name, and back.
        ix.add(&[
            doc(5, "web/httpcore", &[], "An HTTP core", "web"),
            doc(6, "data/time-series", &[], "Points over time", "db"),
            doc(7, "misc/toolbox", &["observability"], "Assorted tools", "ops"),
        ])
        .unwrap();
        ix.commit().unwrap();
        assert_eq!(keys(&ix, "http core").first(), Some(&5));
        assert_eq!(keys(&ix, "timeseries").first(), Some(&6));
        assert_eq!(keys(&ix, "graphqlkit").first(), Some(&2));
        // A keyword's first letters.
        assert_eq!(keys(&ix, "observ").first(), Some(&7));
    }

    #[test]
    fn typos_in_names_still_match() {
        let (_d, ix) = index();
        assert_eq!(keys(&ix, "rest-apj").first(), Some(&1));
        assert_eq!(keys(&ix, "kubernets").first(), Some(&4));
        assert_eq!(keys(&ix, "grapql").first(), Some(&2));
        assert!(keys(&ix, "zzzzzz").is_empty());
    }

    #[test]
    fn a_name_match_ranks_above_a_description_match() {
        let (_d, ix) = index();
        let k = keys(&ix, "rest api");
        assert_eq!(k.first(), Some(&1), "{k:?}");
        assert!(k.contains(&3), "the description match is still a result: {k:?}");
    }

    #[test]
    fn stemming_and_all_words_required() {
        let (_d, ix) = index();
        let mut t = keys(&ix, "template");
        t.sort();
        assert_eq!(t, vec![1, 3], "templates matches template");
        assert!(keys(&ix, "kubernetes graphql").is_empty());
        assert_eq!(
            keys(&ix, "operator for kubernetes"),
            vec![4],
            "stopwords are not required"
        );
        assert_eq!(keys(&ix, "").len(), 4, "an empty query browses everything");
    }

    #[test]
    fn filtered_documents_are_not_candidates() {
        let (_d, ix) = index();
        let q = ix.parse("api");
        let c = ix
            .candidates(&q, 10, |keys| {
                let keys = keys.clone();
                move |doc, s| (keys.get(doc) != 1).then_some(s)
            })
            .unwrap();
        assert!(c.iter().all(|c| c.key != 1));
        assert!(!c.is_empty());
    }

    #[test]
    fn reopening_keeps_documents_and_a_damaged_index_is_rebuilt() {
        let (d, ix) = index();
        let path = ix.dir().to_path_buf();
        drop(ix);
        let (ix, created) = TextIndex::open(&path).unwrap();
        assert!(!created);
        assert_eq!(ix.keys().unwrap(), [1, 2, 3, 4].into_iter().collect());
        let addr = tantivy::DocAddress::new(0, 0);
        assert!(ix.stored_key(addr).is_some());
        drop(ix);
        std::fs::write(path.join("meta.json"), b"{ not json").unwrap();
        let (ix, created) = TextIndex::open(&path).unwrap();
        assert!(created, "a damaged index is recreated empty");
        assert_eq!(ix.num_docs(), 0);
        drop(d);
    }
}
