//! `packfed sparql`: read-only SPARQL 1.1 over an RDF graph of the node's
//! catalog (oxigraph, in memory), plus the Turtle ontologies shipped in the
//! packs the node holds, each in a named graph of its release.
//!
//! Vocabulary (`pf:` is `https://packfed.dev/ns#`; a pack is
//! `https://packfed.dev/pack/NS/NAME`, a release that IRI plus `/VERSION`):
//!
//! | subject | predicate | object |
//! |---|---|---|
//! | pack | `rdf:type` | `pf:Pack` |
//! | pack | `pf:name`, `pf:namespace` | string |
//! | pack | `pf:release` | release |
//! | release | `rdf:type` | `pf:Release` |
//! | release | `pf:pack` | pack |
//! | release | `pf:id`, `pf:version`, `pf:license`, `pf:category`, `pf:description`, `pf:hash`, `pf:publisher` (hex key) | string |
//! | release | `pf:keyword` | string (one per keyword) |
//! | release | `pf:qualityScore`, `pf:size`, `pf:installs` | integer |
//! | release | `pf:tier` (experimental, beta, production, enterprise), `pf:status` (accepted, quarantined) | string |
//! | release | `pf:yanked` | boolean |
//! | release | `pf:deprecated` | the owner's message (absent: not deprecated) |
//! | release | `pf:publishedAt` | `xsd:dateTime` (the publisher's claim) |
//! | release | `pf:dependency` | a node with `pf:dependsOn` (pack) and `pf:requirement` (string) |
//! | release | `pf:attestation` | a node with `pf:kind`, `pf:result` (pass, fail), `pf:attester` (hex), `pf:attesterRole` (a member role, or `none`) |
//! | release | `pf:ontology` | a named graph (the release IRI) holding `ontologies/*.ttl` |
//!
//! Queries run with a time limit (cancelled, with a clear error) and a cap
//! on the results; updates and `SERVICE` are refused.

use std::io::Write;
use std::time::Duration;

use oxigraph::model::vocab::{rdf, xsd};
use oxigraph::model::{BlankNode, GraphNameRef, Literal, NamedNode, NamedOrBlankNode as Subject, Quad, Term};
use oxigraph::sparql::results::{QueryResultsFormat, QueryResultsSerializer};
use oxigraph::sparql::{CancellationToken, QueryEvaluationError, QueryResults, SparqlEvaluator};
use oxigraph::store::Store;

/// The packfed vocabulary's namespace.
pub const NS: &str = "https://packfed.dev/ns#";

/// Where pack and release IRIs start.
pub const PACK_BASE: &str = "https://packfed.dev/pack/";

/// Longest query text accepted.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Largest ontology file loaded from a pack.
pub const MAX_ONTOLOGY_BYTES: u64 = 8 * 1024 * 1024;

/// How long a query may run and how many results it may return.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_results: usize,
}

impl From<&crate::config::SparqlSection> for Limits {
    fn from(c: &crate::config::SparqlSection) -> Limits {
        Limits {
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
            max_results: c.max_results.max(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(5),
            max_results: 10_000,
        }
    }
}

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SparqlError {
    #[error("the query is {0} bytes, over the {MAX_QUERY_BYTES}-byte limit")]
    TooLong(usize),
    #[error("SPARQL syntax error: {0}")]
    Syntax(String),
    #[error("updates are refused: the catalog graph is read-only (use SELECT, ASK or CONSTRUCT)")]
    Update,
    #[error("SERVICE is refused: queries run on this node's catalog only")]
    Service,
    #[error("the query ran past its time limit of {0:?} and was stopped; narrow it, or raise [sparql] timeout_ms")]
    Timeout(Duration),
    #[error("query evaluation failed: {0}")]
    Evaluation(String),
    #[error("{MAX_RUNNING} queries are already running (or still stopping after their time limit); retry shortly")]
    Busy,
}

/// A query's answer, serialized.
pub struct Answer {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Results past the cap were left out.
    pub truncated: bool,
    pub rows: usize,
}

/// The output formats of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SPARQL 1.1 query results JSON.
    Json,
    Csv,
}

fn pf(local: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{NS}{local}"))
}

/// The IRI of a pack (`ns/name`), or of one of its releases.
pub fn pack_iri(name: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{PACK_BASE}{name}"))
}

pub fn release_iri(name: &str, version: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{PACK_BASE}{name}/{version}"))
}

/// What one release contributes to the graph.
pub struct ReleaseFacts<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub description: &'a str,
    pub license: &'a str,
    pub keywords: &'a [String],
    pub category: &'a str,
    pub hash: &'a str,
    pub publisher: &'a str,
    pub quality: u32,
    pub tier: &'a str,
    pub status: &'a str,
    pub yanked: bool,
    pub deprecated: Option<&'a str>,
    pub installs: u64,
    pub size: u64,
    pub published_at_ms: u64,
    pub dependencies: Vec<(&'a str, &'a str)>,
    /// (kind, result, attester, role)
    pub attestations: Vec<(&'a str, &'a str, &'a str, &'a str)>,
}

/// Adds a release's triples to `quads`.
pub fn release_quads(f: &ReleaseFacts<'_>, quads: &mut Vec<Quad>) {
    let g = GraphNameRef::DefaultGraph;
    let pack = pack_iri(f.name);
    let rel = release_iri(f.name, f.version);
    let mut add = |s: Subject, p: NamedNode, o: Term| quads.push(Quad::new(s, p, o, g));
    let str_ = |s: &str| Term::from(Literal::new_simple_literal(s));
    let int = |i: u64| Term::from(Literal::new_typed_literal(i.to_string(), xsd::INTEGER));
    add(pack.clone().into(), rdf::TYPE.into_owned(), pf("Pack").into());
    add(pack.clone().into(), pf("name"), str_(f.name));
    add(
        pack.clone().into(),
        pf("namespace"),
        str_(f.name.split('/').next().unwrap_or_default()),
    );
    add(pack.clone().into(), pf("release"), rel.clone().into());
    let r: Subject = rel.clone().into();
    add(r.clone(), rdf::TYPE.into_owned(), pf("Release").into());
    add(r.clone(), pf("pack"), pack.into());
    add(r.clone(), pf("id"), str_(&format!("{}@{}", f.name, f.version)));
    add(r.clone(), pf("version"), str_(f.version));
    add(r.clone(), pf("description"), str_(f.description));
    add(r.clone(), pf("license"), str_(f.license));
    for k in f.keywords {
        add(r.clone(), pf("keyword"), str_(k));
    }
    if !f.category.is_empty() {
        add(r.clone(), pf("category"), str_(f.category));
    }
    add(r.clone(), pf("hash"), str_(f.hash));
    add(r.clone(), pf("publisher"), str_(f.publisher));
    add(r.clone(), pf("qualityScore"), int(u64::from(f.quality)));
    add(r.clone(), pf("tier"), str_(f.tier));
    add(r.clone(), pf("status"), str_(f.status));
    add(r.clone(), pf("yanked"), Literal::from(f.yanked).into());
    if let Some(d) = f.deprecated {
        add(r.clone(), pf("deprecated"), str_(d));
    }
    add(r.clone(), pf("installs"), int(f.installs));
    add(r.clone(), pf("size"), int(f.size));
    add(
        r.clone(),
        pf("publishedAt"),
        Literal::new_typed_literal(crate::project::rfc3339(f.published_at_ms), xsd::DATE_TIME).into(),
    );
    for (dep, req) in &f.dependencies {
        let b: Subject = BlankNode::default().into();
        add(r.clone(), pf("dependency"), b.clone().into());
        add(b.clone(), rdf::TYPE.into_owned(), pf("Dependency").into());
        add(b.clone(), pf("dependsOn"), pack_iri(dep).into());
        add(b, pf("requirement"), str_(req));
    }
    for (kind, result, attester, role) in &f.attestations {
        let b: Subject = BlankNode::default().into();
        add(r.clone(), pf("attestation"), b.clone().into());
        add(b.clone(), rdf::TYPE.into_owned(), pf("Attestation").into());
        add(b.clone(), pf("kind"), str_(kind));
        add(b.clone(), pf("result"), str_(result));
        add(b.clone(), pf("attester"), str_(attester));
        add(b, pf("attesterRole"), str_(role));
    }
}

/// Loads Turtle into the named graph `graph`; a file that does not parse
/// is skipped with its reason (one pack's bad ontology must not hide the
/// others).
pub fn load_turtle(store: &Store, graph: &NamedNode, base: &str, text: &[u8]) -> Result<(), String> {
    use oxigraph::io::{RdfFormat, RdfParser};
    let parser = RdfParser::from_format(RdfFormat::Turtle)
        .with_base_iri(base)
        .map_err(|e| e.to_string())?
        .with_default_graph(graph.clone())
        .without_named_graphs();
    store.load_from_slice(parser, text).map_err(|e| e.to_string())
}

/// Whether a pack file is an ontology the graph loads.
pub fn is_ontology(path: &str) -> bool {
    path.starts_with("ontologies/") && path.ends_with(".ttl")
}

/// Runs a read-only query on `store` within `limits`.
pub fn run(store: &Store, text: &str, format: Format, limits: Limits) -> Result<Answer, SparqlError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(SparqlError::TooLong(text.len()));
    }
    let parsed = match spargebra::SparqlParser::new().parse_query(text) {
        Ok(q) => q,
        Err(e) => {
            if spargebra::SparqlParser::new().parse_update(text).is_ok() {
                return Err(SparqlError::Update);
            }
            return Err(SparqlError::Syntax(e.to_string()));
        }
    };
    // The algebra prints its SERVICE clauses back.
    if parsed.to_string().contains("SERVICE") {
        return Err(SparqlError::Service);
    }
    // Evaluation runs on its own thread so the caller gets its answer at
    // the deadline: oxigraph notices the cancellation only when it next
    // reads the dataset, which a cross product of materialized parts may
    // not do for a while. Such a worker keeps its slot until it stops.
    let Some(slot) = WorkerSlot::take() else {
        return Err(SparqlError::Busy);
    };
    let token = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let worker = {
        let store = store.clone();
        let token = token.clone();
        std::thread::Builder::new()
            .name("sparql".into())
            .spawn(move || {
                let _slot = slot;
                let _ = tx.send(evaluate(&store, parsed, format, limits, token));
            })
            .map_err(|e| SparqlError::Evaluation(e.to_string()))?
    };
    match rx.recv_timeout(limits.timeout) {
        Ok(result) => {
            let _ = worker.join();
            result.map_err(|e| match e {
                QueryEvaluationError::Cancelled => SparqlError::Timeout(limits.timeout),
                other => SparqlError::Evaluation(other.to_string()),
            })
        }
        Err(_) => {
            token.cancel();
            Err(SparqlError::Timeout(limits.timeout))
        }
    }
}

/// Most queries evaluating at once (stopped ones included until they stop).
const MAX_RUNNING: usize = 2;

static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A place among the [`MAX_RUNNING`] evaluations, given back on drop.
struct WorkerSlot;

impl WorkerSlot {
    fn take() -> Option<WorkerSlot> {
        use std::sync::atomic::Ordering;
        RUNNING
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_RUNNING).then_some(n + 1)
            })
            .ok()
            .map(|_| WorkerSlot)
    }
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn io_err(e: std::io::Error) -> QueryEvaluationError {
    QueryEvaluationError::Unexpected(e.into())
}

fn evaluate(
    store: &Store,
    query: spargebra::Query,
    format: Format,
    limits: Limits,
    token: CancellationToken,
) -> Result<Answer, QueryEvaluationError> {
    let results = SparqlEvaluator::new()
        .with_cancellation_token(token)
        .for_query(query)
        .on_store(store)
        .execute()?;
    let (fmt, content_type) = match format {
        Format::Json => (QueryResultsFormat::Json, "application/sparql-results+json"),
        Format::Csv => (QueryResultsFormat::Csv, "text/csv"),
    };
    let mut body = Vec::new();
    let mut truncated = false;
    let mut rows = 0;
    match results {
        QueryResults::Boolean(b) => {
            QueryResultsSerializer::from_format(fmt)
                .serialize_boolean_to_writer(&mut body, b)
                .map_err(io_err)?;
            rows = 1;
        }
        QueryResults::Solutions(solutions) => {
            let mut w = QueryResultsSerializer::from_format(fmt)
                .serialize_solutions_to_writer(&mut body, solutions.variables().to_vec())
                .map_err(io_err)?;
            for s in solutions {
                let s = s?;
                if rows == limits.max_results {
                    truncated = true;
                    break;
                }
                w.serialize(&s).map_err(io_err)?;
                rows += 1;
            }
            w.finish().map_err(io_err)?;
        }
        QueryResults::Graph(triples) => {
            for t in triples {
                let t = t?;
                if rows == limits.max_results {
                    truncated = true;
                    break;
                }
                writeln!(body, "{t} .").map_err(io_err)?;
                rows += 1;
            }
            return Ok(Answer {
                body,
                content_type: "application/n-triples",
                truncated,
                rows,
            });
        }
    }
    Ok(Answer {
        body,
        content_type,
        truncated,
        rows,
    })
}

/// Builds the catalog graph of what `node` holds: every visible release
/// (org ones only with `include_org`) with its verdict, attestations,
/// deprecation and installs, and the ontologies of packs whose archive the
/// node holds, each in the named graph of its release.
pub fn build(node: &crate::node::Node, include_org: bool) -> anyhow::Result<Store> {
    use crate::node::ReleaseView;
    let store = Store::new()?;
    let mut quads = Vec::new();
    for name in node.store.package_names(None)? {
        for e in node.versions(&name)? {
            let org = e.release.visibility == packfed_protocol::pb::Visibility::Org as i32;
            if org && !include_org {
                continue;
            }
            let v = ReleaseView::judged(node, &e);
            let atts = node.attestation_views(&e)?;
            let hash = v.hash.to_hex();
            release_quads(
                &ReleaseFacts {
                    name: &v.name,
                    version: &v.version,
                    description: &v.description,
                    license: &v.license,
                    keywords: &v.keywords,
                    category: &v.category,
                    hash: &hash,
                    publisher: &v.publisher,
                    quality: v.quality.score,
                    tier: &v.quality.tier,
                    status: v.status,
                    yanked: v.yanked,
                    deprecated: v.deprecated.as_ref().map(|d| d.message.as_str()),
                    installs: v.installs,
                    size: v.size,
                    published_at_ms: v.published_at_ms,
                    dependencies: v
                        .dependencies
                        .iter()
                        .map(|d| (d.name.as_str(), d.requirement.as_str()))
                        .collect(),
                    attestations: atts
                        .iter()
                        .filter(|a| a.current)
                        .map(|a| (a.kind.as_str(), a.result, a.attester.as_str(), a.role.unwrap_or("none")))
                        .collect(),
                },
                &mut quads,
            );
            if quads.len() > 100_000 {
                store.extend(std::mem::take(&mut quads))?;
            }
            if node.store.has_blob(&v.hash)? {
                add_ontologies(node, &store, &v, &mut quads)?;
            }
        }
    }
    store.extend(quads)?;
    Ok(store)
}

/// Loads a held pack's `ontologies/*.ttl` into the named graph of its
/// release; one that does not parse is skipped (logged).
fn add_ontologies(
    node: &crate::node::Node,
    store: &Store,
    v: &crate::node::ReleaseView,
    quads: &mut Vec<Quad>,
) -> anyhow::Result<()> {
    use packfed_protocol::archive::{ReadLimits, read_files};
    let (meta, reader) = node.store.blob_reader(&v.hash)?;
    let files = match read_files(
        std::io::BufReader::new(reader),
        ReadLimits::for_archive(meta.size),
        is_ontology,
        MAX_ONTOLOGY_BYTES,
    ) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(id = %v.id, error = %e, "pack archive unreadable for the SPARQL graph");
            return Ok(());
        }
    };
    let graph = release_iri(&v.name, &v.version);
    for (path, text) in files {
        match load_turtle(store, &graph, &format!("{}/{path}", graph.as_str()), &text) {
            Ok(()) => quads.push(Quad::new(
                graph.clone(),
                pf("ontology"),
                graph.clone(),
                GraphNameRef::DefaultGraph,
            )),
            Err(e) => tracing::info!(id = %v.id, %path, error = %e, "ontology skipped: not valid Turtle"),
        }
    }
    Ok(())
}

/// A graph of one unpacked pack's own ontologies (`ontologies/**/*.ttl`),
/// in the default graph.
pub fn pack_graph(root: &std::path::Path) -> anyhow::Result<Store> {
    use oxigraph::io::{RdfFormat, RdfParser};
    let store = Store::new()?;
    let mut stack = vec![root.join("ontologies")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let e = e?;
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file()
                && e.path().extension().is_some_and(|x| x == "ttl")
                && meta.len() <= MAX_ONTOLOGY_BYTES
            {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap_or(&e.path())
                    .to_string_lossy()
                    .into_owned();
                let parser = RdfParser::from_format(RdfFormat::Turtle)
                    .with_base_iri(format!("file:///{rel}"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                store
                    .load_from_slice(parser, &std::fs::read(e.path())?)
                    .map_err(|err| anyhow::anyhow!("{rel} is not valid Turtle: {err}"))?;
            }
        }
    }
    Ok(store)
}

/// The catalog graphs an API serves, rebuilt when the store changed since.
#[derive(Default)]
pub struct GraphCache {
    /// Indexed by "includes org releases"; with the change count it was
    /// built at.
    graphs: std::sync::Mutex<[Option<(u64, Store)>; 2]>,
}

impl GraphCache {
    /// The graph as of change `generation` (None: always rebuild).
    pub fn get(&self, node: &crate::node::Node, include_org: bool, generation: Option<u64>) -> anyhow::Result<Store> {
        let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut graphs[usize::from(include_org)];
        if let (Some((built, g)), Some(now)) = (slot.as_ref(), generation)
            && *built == now
        {
            return Ok(g.clone());
        }
        let g = build(node, include_org)?;
        *slot = generation.map(|n| (n, g.clone()));
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Store {
        let store = Store::new().unwrap();
        let mut quads = Vec::new();
        let kw = vec!["http".to_string()];
        for (name, deps, audit) in [
            ("acme/http-core", vec![], None),
            ("acme/rest-api", vec![("acme/http-core", "^1.2")], Some("pass")),
            ("acme/old-api", vec![("acme/http-core", "^0.9")], Some("pass")),
            ("acme/grpc", vec![("acme/http-core", "^1")], Some("fail")),
        ] {
            release_quads(
                &ReleaseFacts {
                    name,
                    version: "1.0.0",
                    description: "d",
                    license: "MIT",
                    keywords: &kw,
                    category: "web",
                    hash: "00",
                    publisher: "ab",
                    quality: 80,
                    tier: "production",
                    status: "accepted",
                    yanked: false,
                    deprecated: None,
                    installs: 3,
                    size: 10,
                    published_at_ms: 0,
                    dependencies: deps,
                    attestations: audit.map(|r| ("audit", r, "cd", "maintainer")).into_iter().collect(),
                },
                &mut quads,
            );
        }
        store.extend(quads).unwrap();
        let g = release_iri("acme/rest-api", "1.0.0");
        load_turtle(
            &store,
            &g,
            g.as_str(),
            b"@prefix owl: <http://www.w3.org/2002/07/owl#> . <#Endpoint> a owl:Class . <#Route> a owl:Class .",
        )
        .unwrap();
        store
    }

    fn rows(store: &Store, q: &str) -> String {
        let a = run(store, q, Format::Csv, Limits::default()).unwrap();
        String::from_utf8(a.body).unwrap()
    }

    #[test]
    fn the_readme_examples_answer() {
        let store = graph();
        let q = format!(
            "PREFIX pf: <{NS}>
             SELECT ?id WHERE {{
               ?r pf:id ?id ; pf:attestation ?a ; pf:dependency ?d .
               ?a pf:kind \"audit\" ; pf:result \"pass\" .
               ?d pf:dependsOn/pf:name \"acme/http-core\" ; pf:requirement ?req .
               FILTER(STRSTARTS(?req, \"^1\"))
             }} ORDER BY ?id"
        );
        assert_eq!(rows(&store, &q), "id\r\nacme/rest-api@1.0.0\r\n");
        let q = format!(
            "PREFIX pf: <{NS}> PREFIX owl: <http://www.w3.org/2002/07/owl#>
             SELECT ?id ?class WHERE {{
               GRAPH ?g {{ ?class a owl:Class . FILTER(STRENDS(STR(?class), \"#Endpoint\")) }}
               ?g pf:id ?id .
             }}"
        );
        assert_eq!(
            rows(&store, &q),
            "id,class\r\nacme/rest-api@1.0.0,https://packfed.dev/pack/acme/rest-api/1.0.0#Endpoint\r\n"
        );
    }

    #[test]
    fn updates_services_and_bad_syntax_are_refused_clearly() {
        let store = graph();
        let err = |q: &str| {
            run(&store, q, Format::Json, Limits::default())
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err("INSERT DATA { <a:b> <a:c> <a:d> }").contains("read-only"));
        assert!(err("DELETE WHERE { ?s ?p ?o }").contains("read-only"));
        assert!(err("SELECT * WHERE { SERVICE <http://example.com/sparql> { ?s ?p ?o } }").contains("SERVICE"));
        let syntax = err("SELECT ?x WHERE { ?x ?y }");
        assert!(
            syntax.starts_with("SPARQL syntax error") && syntax.contains("1:"),
            "{syntax}"
        );
    }

    #[test]
    fn results_are_capped_and_long_queries_stopped() {
        let store = graph();
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_results: 3,
        };
        let a = run(&store, "SELECT * WHERE { ?s ?p ?o }", Format::Json, limits).unwrap();
        assert!(a.truncated);
        assert_eq!(a.rows, 3);
        let limits = Limits {
            timeout: Duration::from_millis(200),
            max_results: 10,
        };
        // A four-way cross product of every triple: far beyond 200 ms.
        let slow = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }";
        let started = std::time::Instant::now();
        let err = run(&store, slow, Format::Json, limits).err().unwrap();
        assert!(matches!(err, SparqlError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
