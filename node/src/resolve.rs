//! Dependency resolution with PubGrub, free of I/O.
//!
//! The caller first gathers a [`Catalog`]: every version the node knows of
//! every pack that resolution may need (the transitive closure of dependency
//! names), then calls [`resolve`], which does no I/O at all.
//!
//! Requirements are translated exactly: a requirement on a pack becomes the
//! set of that pack's known versions that `VersionReq::matches` accepts, so
//! `^`, `~`, `=`, comparators, wildcards, comma-joined comparators and
//! pre-release rules are the `semver` crate's own. Only known versions can be
//! chosen, so the set only has to be right about those: each run of
//! consecutive known versions it holds becomes one closed interval of a
//! PubGrub `Ranges`. Yanked versions stay in the sets (a requirement still
//! matches them, and messages say so) but are never chosen.
//!
//! The solver gives up after [`MAX_RETRIES`] backtracks, so an adversarial
//! graph cannot keep it busy for hours.
//!
//! Several root requirements hang off a synthetic root package. Among the
//! versions allowed, the newest non-yanked one is tried first, and PubGrub
//! backtracks when that leads to a conflict. When no solution exists, the
//! derivation PubGrub returns is turned into sentences that name packs,
//! versions and the requirements as their publishers wrote them.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use packfed_protocol::records::PackName;
use pubgrub::{
    DefaultStringReporter, Dependencies, DependencyProvider, Derived, External, Map, PackageResolutionStatistics,
    PubGrubError, Ranges, ReportFormatter, Reporter, Term,
};
use semver::{Version, VersionReq};

/// One version of a pack, as far as resolution cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateInfo {
    pub version: Version,
    pub yanked: bool,
    pub deps: Vec<(PackName, VersionReq)>,
}

/// Every version of every pack resolution may look at. A pack that is absent,
/// or present with no versions, is one this node does not know.
pub type Catalog = BTreeMap<PackName, Vec<CandidateInfo>>;

/// Why resolution failed, with a message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Some pack needed by every way out is not known to this node.
    #[error("{message}")]
    NotFound { missing: Vec<PackName>, message: String },
    /// The requirements contradict each other, or match only yanked or no
    /// versions.
    #[error("{message}")]
    Unresolvable { message: String },
}

impl ResolveError {
    /// The machine-readable error code the CLI reports.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::NotFound { .. } => "not_found",
            ResolveError::Unresolvable { .. } => "unresolvable",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ResolveError::NotFound { message, .. } | ResolveError::Unresolvable { message } => message,
        }
    }
}

/// Picks one version per pack such that every requirement, from `root` and
/// from the dependencies of each picked version, holds. Prefers newer
/// versions; never picks a yanked one. The result names every pack needed,
/// including `root`'s.
pub fn resolve(
    root: &[(PackName, VersionReq)],
    catalog: &Catalog,
) -> Result<BTreeMap<PackName, Version>, ResolveError> {
    resolve_within(root, catalog, MAX_RETRIES)
}

/// The line of versions a pack keeps compatible within: its major, or for
/// 0.x its minor (semver's caret rules).
fn line(v: &Version) -> (u64, u64) {
    if v.major == 0 { (0, v.minor) } else { (v.major, 0) }
}

/// The stand-in name of one line of a pack during side-by-side resolution.
fn line_name(name: &PackName, (major, minor): (u64, u64)) -> Option<PackName> {
    let suffix = if major == 0 {
        format!("--v0-{minor}")
    } else {
        format!("--v{major}")
    };
    format!("{name}{suffix}").parse().ok()
}

/// Like [`resolve`], but each major line of a pack (0.x: each minor) is a
/// pack of its own, so dependents needing incompatible majors each get
/// theirs: the result may hold several versions of one pack, one per
/// line. A requirement goes to the newest line holding a version it
/// matches (the newest line when none does, which the solver then explains).
pub fn resolve_side_by_side(
    root: &[(PackName, VersionReq)],
    catalog: &Catalog,
) -> Result<Vec<(PackName, Version)>, ResolveError> {
    let lines: BTreeMap<&PackName, BTreeSet<(u64, u64)>> = catalog
        .iter()
        .map(|(n, vs)| (n, vs.iter().map(|c| line(&c.version)).collect()))
        .collect();
    let mut real: HashMap<PackName, PackName> = HashMap::new();
    let target = |name: &PackName, req: &VersionReq| -> PackName {
        let Some(held) = lines.get(name) else {
            return name.clone();
        };
        let matching = catalog[name]
            .iter()
            .filter(|c| req.matches(&c.version))
            .map(|c| line(&c.version))
            .max();
        let Some(l) = matching.or_else(|| held.iter().next_back().copied()) else {
            return name.clone();
        };
        line_name(name, l).unwrap_or_else(|| name.clone())
    };
    let mut split: Catalog = BTreeMap::new();
    for (name, versions) in catalog {
        for c in versions {
            let Some(v) = line_name(name, line(&c.version)) else {
                split.entry(name.clone()).or_default().push(c.clone());
                continue;
            };
            let deps = c.deps.iter().map(|(d, r)| (target(d, r), r.clone())).collect();
            real.insert(v.clone(), name.clone());
            split.entry(v).or_default().push(CandidateInfo {
                version: c.version.clone(),
                yanked: c.yanked,
                deps,
            });
        }
    }
    let root: Vec<(PackName, VersionReq)> = root.iter().map(|(n, r)| (target(n, r), r.clone())).collect();
    let picks = resolve(&root, &split)?;
    Ok(picks
        .into_iter()
        .map(|(n, v)| (real.get(&n).cloned().unwrap_or(n), v))
        .collect())
}

/// [`resolve`], giving up once the solver has gone back on its choices
/// `max_retries` times.
pub fn resolve_within(
    root: &[(PackName, VersionReq)],
    catalog: &Catalog,
    max_retries: u64,
) -> Result<BTreeMap<PackName, Version>, ResolveError> {
    let provider = Provider::new(root, catalog, max_retries);
    match pubgrub::resolve(&provider, Node::Root, root_version()) {
        Ok(solution) => Ok(solution
            .into_iter()
            .filter_map(|(node, version)| match node {
                Node::Root => None,
                Node::Pack(name) => Some((name, version)),
            })
            .collect()),
        Err(PubGrubError::NoSolution(tree)) => Err(explain(&provider, &tree)),
        Err(PubGrubError::ErrorInShouldCancel(GaveUp)) => Err(ResolveError::Unresolvable {
            message: format!(
                "dependency resolution gave up after reconsidering its choices {max_retries} times: the requirements leave too many \
                 combinations of versions to try; narrow them, e.g. with exact versions (NAME@=VERSION)"
            ),
        }),
        // The provider fails in no other way; keep a readable message all
        // the same.
        Err(e) => Err(ResolveError::Unresolvable {
            message: format!("dependency resolution failed: {e}"),
        }),
    }
}

/// How many times [`resolve`] may choose a version for a pack it already
/// chose one for (after backtracking), or find no version left for a pack,
/// before giving up. A graph without conflicts needs none, however large;
/// adversarial graphs could otherwise keep the solver busy for hours (the
/// cost of a step grows with the conflicts learned so far). In release
/// builds, 10,000 retries take well under a second on hard random graphs.
pub const MAX_RETRIES: u64 = 10_000;

/// The error a provider returns once its step budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the step budget is spent")]
struct GaveUp;

/// The most versions listed for one pack in an error message.
const MAX_LISTED_VERSIONS: usize = 20;

/// What the root stands for in messages.
const ROOT: &str = "your request";

fn root_version() -> Version {
    Version::new(0, 0, 0)
}

/// A package as PubGrub sees it: a pack, or the synthetic root that depends on
/// everything requested.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Node {
    Root,
    Pack(PackName),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Root => f.write_str(ROOT),
            Node::Pack(name) => write!(f, "{name}"),
        }
    }
}

/// A set of versions. Requirements become unions of closed intervals whose
/// ends are known versions: each run of consecutive known versions that a
/// requirement matches becomes one interval. That is exact for every known
/// version (and only known versions can be chosen), and keeps sets small.
type VSet = Ranges<Version>;

/// Requirements on one pack, grouped: a release (or the root) may name the
/// same pack more than once, and then all of them must hold.
type Grouped<'a> = Vec<(&'a PackName, Vec<&'a VersionReq>)>;

fn group<'a>(deps: &'a [(PackName, VersionReq)]) -> Grouped<'a> {
    let mut out: Grouped<'a> = Vec::new();
    for (name, req) in deps {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, reqs)) => reqs.push(req),
            None => out.push((name, vec![req])),
        }
    }
    out
}

fn join_reqs(reqs: &[&VersionReq]) -> String {
    reqs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

/// Joins phrases as "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The catalog, indexed for PubGrub.
struct Provider<'a> {
    root: Grouped<'a>,
    /// Per pack, one entry per version, newest first.
    packs: HashMap<&'a PackName, Vec<&'a CandidateInfo>>,
    /// Packs a version was chosen for at least once.
    chosen: RefCell<HashSet<Node>>,
    retries: Cell<u64>,
    max_retries: u64,
}

impl<'a> Provider<'a> {
    fn new(root: &'a [(PackName, VersionReq)], catalog: &'a Catalog, max_retries: u64) -> Self {
        let packs = catalog
            .iter()
            .map(|(name, versions)| {
                let mut vs: Vec<&CandidateInfo> = versions.iter().collect();
                // Stable sort, so a duplicated version keeps its first entry.
                vs.sort_by(|a, b| b.version.cmp(&a.version));
                vs.dedup_by(|a, b| a.version == b.version);
                (name, vs)
            })
            .collect();
        Provider {
            root: group(root),
            packs,
            chosen: RefCell::new(HashSet::new()),
            retries: Cell::new(0),
            max_retries,
        }
    }

    /// Known versions of `name`, newest first; empty for an unknown pack.
    fn versions(&self, name: &PackName) -> &[&'a CandidateInfo] {
        self.packs.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    fn is_known(&self, name: &PackName) -> bool {
        !self.versions(name).is_empty()
    }

    fn info(&self, name: &PackName, version: &Version) -> Option<&'a CandidateInfo> {
        let vs = self.versions(name);
        vs.binary_search_by(|c| version.cmp(&c.version)).ok().map(|i| vs[i])
    }

    /// Known versions of `name` in `set`, oldest first.
    fn known_in(&self, name: &PackName, set: &VSet) -> Vec<&'a CandidateInfo> {
        self.versions(name)
            .iter()
            .rev()
            .filter(|c| set.contains(&c.version))
            .copied()
            .collect()
    }

    /// The known versions of `name` that satisfy all of `reqs`, as runs of
    /// consecutive known versions.
    fn matching(&self, name: &PackName, reqs: &[&VersionReq]) -> VSet {
        let mut runs: Vec<(&Version, &Version)> = Vec::new();
        let mut open = false;
        for c in self.versions(name).iter().rev() {
            if reqs.iter().all(|r| r.matches(&c.version)) {
                match runs.last_mut() {
                    Some(run) if open => run.1 = &c.version,
                    _ => runs.push((&c.version, &c.version)),
                }
                open = true;
            } else {
                open = false;
            }
        }
        runs.into_iter()
            .map(|(low, high)| (Bound::Included(low.clone()), Bound::Included(high.clone())))
            .collect()
    }

    /// What `node` at `version` requires, grouped by pack; `None` when that
    /// version is not in the catalog.
    fn requirements(&self, node: &Node, version: &Version) -> Option<Grouped<'a>> {
        match node {
            Node::Root => Some(self.root.clone()),
            Node::Pack(name) => self.info(name, version).map(|c| group(&c.deps)),
        }
    }

    /// The requirement text behind "`node` in `set` depends on `dep` in
    /// `dep_set`", as written by the root or the publisher.
    fn requirement_text(&self, node: &Node, set: &VSet, dep: &PackName, dep_set: &VSet) -> Option<String> {
        let versions: Vec<Version> = match node {
            Node::Root => vec![root_version()],
            Node::Pack(name) => self
                .known_in(name, set)
                .into_iter()
                .map(|c| c.version.clone())
                .collect(),
        };
        let mut fallback = None;
        for v in versions.iter().rev() {
            let Some(reqs) = self.requirements(node, v) else {
                continue;
            };
            if let Some((_, reqs)) = reqs.iter().find(|(n, _)| *n == dep) {
                if self.matching(dep, reqs) == *dep_set {
                    return Some(join_reqs(reqs));
                }
                fallback.get_or_insert_with(|| join_reqs(reqs));
            }
        }
        fallback
    }
}

impl DependencyProvider for Provider<'_> {
    type P = Node;
    type V = Version;
    type VS = VSet;
    type Priority = (u32, Reverse<usize>);
    type M = String;
    type Err = GaveUp;

    /// Packs that caused conflicts first, then those with fewer choices left;
    /// a pack with no choice left goes first of all, to fail fast.
    fn prioritize(&self, package: &Node, range: &VSet, stats: &PackageResolutionStatistics) -> Self::Priority {
        let choices = match package {
            Node::Root => 1,
            Node::Pack(name) => self
                .versions(name)
                .iter()
                .filter(|c| !c.yanked && range.contains(&c.version))
                .count(),
        };
        if choices == 0 {
            return (u32::MAX, Reverse(0));
        }
        (stats.conflict_count(), Reverse(choices))
    }

    /// The newest non-yanked version in `range`.
    fn choose_version(&self, package: &Node, range: &VSet) -> Result<Option<Version>, GaveUp> {
        let choice = match package {
            Node::Root => Some(root_version()).filter(|v| range.contains(v)),
            Node::Pack(name) => self
                .versions(name)
                .iter()
                .find(|c| !c.yanked && range.contains(&c.version))
                .map(|c| c.version.clone()),
        };
        if choice.is_none() || !self.chosen.borrow_mut().insert(package.clone()) {
            self.retries.set(self.retries.get() + 1);
        }
        Ok(choice)
    }

    fn get_dependencies(&self, package: &Node, version: &Version) -> Result<Dependencies<Node, VSet, String>, GaveUp> {
        let Some(reqs) = self.requirements(package, version) else {
            return Ok(Dependencies::Unavailable(
                "this version is not known to this node".into(),
            ));
        };
        let mut out = Vec::with_capacity(reqs.len());
        for (dep, dep_reqs) in reqs {
            if let Node::Pack(name) = package
                && name == dep
            {
                // A pack that requires itself: fine when its own version
                // qualifies, impossible otherwise.
                if dep_reqs.iter().all(|r| r.matches(version)) {
                    continue;
                }
                return Ok(Dependencies::Unavailable(format!(
                    "it requires {dep} {} of itself",
                    join_reqs(&dep_reqs)
                )));
            }
            out.push((Node::Pack(dep.clone()), self.matching(dep, &dep_reqs)));
        }
        Ok(Dependencies::Available(out.into_iter().collect()))
    }

    /// Called once per solver step.
    fn should_cancel(&self) -> Result<(), GaveUp> {
        if self.retries.get() > self.max_retries {
            Err(GaveUp)
        } else {
            Ok(())
        }
    }
}

type Tree = pubgrub::DerivationTree<Node, VSet, String>;
type Ext = External<Node, VSet, String>;

/// Every external fact in `tree`, each shared subtree visited once.
fn externals(tree: &Tree) -> Vec<&Ext> {
    fn walk<'t>(tree: &'t Tree, seen: &mut HashSet<*const Tree>, out: &mut Vec<&'t Ext>) {
        match tree {
            Tree::External(e) => out.push(e),
            Tree::Derived(d) => {
                for cause in [&d.cause1, &d.cause2] {
                    if seen.insert(Arc::as_ptr(cause)) {
                        walk(cause, seen, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut HashSet::new(), &mut out);
    out
}

/// Turns PubGrub's derivation into an error a person can act on.
fn explain(provider: &Provider<'_>, tree: &Tree) -> ResolveError {
    let facts = externals(tree);
    let explainer = Explainer::new(provider, &facts);

    // Packs this node does not know, and who asked for them.
    let mut missing: BTreeMap<PackName, Vec<String>> = BTreeMap::new();
    // Whether anything besides unknown packs stands in the way.
    let mut other_problems = false;
    let mut dep_sets: HashMap<&PackName, &VSet> = HashMap::new();
    for fact in &facts {
        match fact {
            External::FromDependencyOf(p, set, Node::Pack(dep), dep_set) => {
                if !provider.is_known(dep) {
                    let who = explainer.pack_at(p, set);
                    let list = missing.entry(dep.clone()).or_default();
                    if !list.contains(&who) {
                        list.push(who);
                    }
                    continue;
                }
                if !provider.known_in(dep, dep_set).iter().any(|c| !c.yanked) {
                    other_problems = true;
                }
                if dep_sets.insert(dep, dep_set).is_some_and(|s| s != dep_set) {
                    other_problems = true;
                }
            }
            External::NoVersions(Node::Pack(p), _) if !provider.is_known(p) => {
                missing.entry(p.clone()).or_default();
            }
            External::NotRoot(..) => {}
            _ => other_problems = true,
        }
    }

    let report = DefaultStringReporter::report_with_formatter(tree, &explainer);
    let mut body = String::new();
    for line in report.lines() {
        body.push('\n');
        if !line.is_empty() {
            body.push_str("  ");
            body.push_str(line);
        }
    }
    for name in explainer.listed.borrow().iter() {
        let versions = provider.versions(name);
        let mut shown: Vec<String> = versions
            .iter()
            .take(MAX_LISTED_VERSIONS)
            .map(|c| format!("{}{}", c.version, if c.yanked { " (yanked)" } else { "" }))
            .collect();
        if versions.len() > MAX_LISTED_VERSIONS {
            shown.push(format!("and {} older", versions.len() - MAX_LISTED_VERSIONS));
        }
        body.push_str(&format!("\navailable versions of {name}: {}", shown.join(", ")));
    }

    if missing.is_empty() {
        return ResolveError::Unresolvable {
            message: format!("no set of versions satisfies every requirement:{body}"),
        };
    }
    let mut message = missing
        .iter()
        .map(|(name, who)| {
            let who = if who.is_empty() {
                String::new()
            } else {
                format!(" (required by {})", and_list(who))
            };
            format!("{name}{who} is not known to this node; check the name with `packfed search`")
        })
        .collect::<Vec<_>>()
        .join("\n");
    if other_problems {
        message.push_str("\nin full:");
        message.push_str(&body);
    }
    ResolveError::NotFound {
        missing: missing.into_keys().collect(),
        message,
    }
}

/// Formats PubGrub's derivation in terms of packs and requirements.
struct Explainer<'p, 'a> {
    provider: &'p Provider<'a>,
    /// Requirement texts by pack, with the known versions each one matches,
    /// to name a derived set by the requirement it came from.
    labels: HashMap<PackName, Vec<(BTreeSet<Version>, String)>>,
    /// Packs whose available versions the message should list.
    listed: RefCell<BTreeSet<PackName>>,
}

impl<'p, 'a> Explainer<'p, 'a> {
    fn new(provider: &'p Provider<'a>, facts: &[&Ext]) -> Self {
        let mut labels: HashMap<PackName, Vec<(BTreeSet<Version>, String)>> = HashMap::new();
        for fact in facts {
            if let External::FromDependencyOf(p, set, Node::Pack(dep), dep_set) = fact
                && let Some(text) = provider.requirement_text(p, set, dep, dep_set)
            {
                let versions = Self::versions_of(provider, dep, dep_set);
                let entry = labels.entry(dep.clone()).or_default();
                if !entry.iter().any(|(v, _)| *v == versions) {
                    entry.push((versions, text));
                }
            }
        }
        Explainer {
            provider,
            labels,
            listed: RefCell::new(BTreeSet::new()),
        }
    }

    fn versions_of(provider: &Provider<'_>, name: &PackName, set: &VSet) -> BTreeSet<Version> {
        provider
            .known_in(name, set)
            .into_iter()
            .map(|c| c.version.clone())
            .collect()
    }

    fn list(&self, name: &PackName) {
        if self.provider.is_known(name) {
            self.listed.borrow_mut().insert(name.clone());
        }
    }

    /// The known versions of `name` in `set` as runs of consecutive known
    /// versions: "1.0.0 to 1.2.0 or 2.0.0".
    fn span(&self, name: &PackName, set: &VSet) -> String {
        let mut runs: Vec<(&Version, &Version)> = Vec::new();
        let mut open = false;
        for c in self.provider.versions(name).iter().rev() {
            if set.contains(&c.version) {
                match runs.last_mut() {
                    Some(run) if open => run.1 = &c.version,
                    _ => runs.push((&c.version, &c.version)),
                }
                open = true;
            } else {
                open = false;
            }
        }
        let runs: Vec<String> = runs
            .into_iter()
            .map(|(a, b)| if a == b { a.to_string() } else { format!("{a} to {b}") })
            .collect();
        match runs.as_slice() {
            [] => "(no known version)".into(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    }

    /// A depender: "acme/a@1.0.0", "acme/a 1.0.0 to 1.2.0", "every version of acme/a".
    fn pack_at(&self, node: &Node, set: &VSet) -> String {
        let Node::Pack(name) = node else {
            return ROOT.into();
        };
        let all = self.provider.versions(name);
        let inside = self.provider.known_in(name, set);
        match inside.as_slice() {
            [] => name.to_string(),
            [one] => format!("{name}@{}", one.version),
            _ if inside.len() == all.len() => format!("every version of {name}"),
            _ => format!("{name} {}", self.span(name, set)),
        }
    }

    /// A requirement: "acme/core ^1" when the set is one a requirement
    /// produced, else the versions it holds.
    fn wanted(&self, node: &Node, set: &VSet) -> String {
        let Node::Pack(name) = node else {
            return ROOT.into();
        };
        let versions = Self::versions_of(self.provider, name, set);
        if let Some((_, text)) = self
            .labels
            .get(name)
            .and_then(|ls| ls.iter().find(|(v, _)| *v == versions))
        {
            return format!("{name} {text}");
        }
        if versions.len() == self.provider.versions(name).len() {
            return name.to_string();
        }
        match versions.len() {
            1 => format!(
                "{name}@{}",
                versions.iter().next().map(Version::to_string).unwrap_or_default()
            ),
            _ => format!("{name} {}", self.span(name, set)),
        }
    }

    fn term(&self, node: &Node, term: &Term<VSet>) -> String {
        match term {
            Term::Positive(set) => self.pack_at(node, set),
            Term::Negative(set) => format!("no {}", self.wanted(node, set)),
        }
    }

    /// "X needs Y", for one dependency fact, with the requirement text.
    fn dependency(&self, p: &Node, set: &VSet, dep: &PackName, dep_set: &VSet) -> String {
        let who = self.pack_at(p, set);
        let text = self
            .provider
            .requirement_text(p, set, dep, dep_set)
            .unwrap_or_else(|| self.span(dep, dep_set));
        if !self.provider.is_known(dep) {
            return format!("{who} needs {dep} {text} (not known to this node)");
        }
        let inside = self.provider.known_in(dep, dep_set);
        if inside.is_empty() {
            self.list(dep);
            format!("{who} needs {dep} {text} (no known version of {dep} matches)")
        } else {
            if inside.iter().all(|c| c.yanked) {
                self.list(dep);
            }
            format!("{who} needs {dep} {text}")
        }
    }

    fn no_versions(&self, name: &PackName, set: &VSet) -> String {
        self.list(name);
        if !self.provider.is_known(name) {
            return format!("{name} is not known to this node");
        }
        let inside = self.provider.known_in(name, set);
        let versions: BTreeSet<Version> = inside.iter().map(|c| c.version.clone()).collect();
        let label = self
            .labels
            .get(name)
            .and_then(|ls| ls.iter().find(|(v, _)| *v == versions))
            .map(|(_, text)| text.as_str());
        if inside.is_empty() {
            match label {
                Some(text) => format!("no known version of {name} matches {text}"),
                None => format!("no known version of {name} satisfies every requirement on it"),
            }
        } else if inside.iter().all(|c| c.yanked) {
            match (label, inside.as_slice()) {
                (Some(text), _) => format!(
                    "every version of {name} that matches {text} is yanked ({})",
                    self.span(name, set)
                ),
                (None, [one]) => format!("{name}@{} is yanked", one.version),
                (None, _) => format!("{name} {} are yanked", self.span(name, set)),
            }
        } else {
            format!("no version of {name} in {} could be chosen", self.span(name, set))
        }
    }
}

impl ReportFormatter<Node, VSet, String> for Explainer<'_, '_> {
    type Output = String;

    fn format_external(&self, external: &Ext) -> String {
        match external {
            External::NotRoot(p, v) => format!("{p} {v} is being resolved"),
            External::NoVersions(Node::Pack(name), set) => self.no_versions(name, set),
            External::NoVersions(Node::Root, _) => format!("{ROOT} cannot be satisfied"),
            External::FromDependencyOf(p, set, Node::Pack(dep), dep_set) => self.dependency(p, set, dep, dep_set),
            External::FromDependencyOf(p, set, dep, dep_set) => {
                format!("{} needs {}", self.pack_at(p, set), self.wanted(dep, dep_set))
            }
            External::Custom(p, set, why) => format!("{} cannot be used ({why})", self.pack_at(p, set)),
        }
    }

    fn format_terms(&self, terms: &Map<Node, Term<VSet>>) -> String {
        let mut terms: Vec<(&Node, &Term<VSet>)> = terms.iter().collect();
        terms.sort_by(|a, b| a.0.cmp(b.0));
        match terms.as_slice() {
            [] => "no set of versions works".into(),
            [(Node::Root, Term::Positive(_))] => format!("{ROOT} cannot be satisfied"),
            [(p, Term::Positive(set))] => format!("{} cannot be used", self.pack_at(p, set)),
            [(p, Term::Negative(set))] => format!("{} is required", self.wanted(p, set)),
            [(p, Term::Positive(set)), (dep, Term::Negative(dep_set))]
            | [(dep, Term::Negative(dep_set)), (p, Term::Positive(set))] => {
                format!("{} needs {}", self.pack_at(p, set), self.wanted(dep, dep_set))
            }
            _ => {
                let parts: Vec<String> = terms.iter().map(|(p, t)| self.term(p, t)).collect();
                format!("{} cannot be used together", and_list(&parts))
            }
        }
    }

    fn explain_both_external(&self, external1: &Ext, external2: &Ext, current_terms: &Map<Node, Term<VSet>>) -> String {
        // Two dependants disagreeing about one pack: say so directly.
        if let (
            External::FromDependencyOf(p1, s1, Node::Pack(d1), t1),
            External::FromDependencyOf(p2, s2, Node::Pack(d2), t2),
        ) = (external1, external2)
            && d1 == d2
            && self.provider.is_known(d1)
            && !current_terms.contains_key(&Node::Pack(d1.clone()))
        {
            self.list(d1);
            return format!(
                "{}, but {}; no version of {d1} satisfies both, so {}.",
                self.dependency(p1, s1, d1, t1),
                self.dependency(p2, s2, d2, t2),
                self.format_terms(current_terms)
            );
        }
        // Say who needs a pack before saying what is wrong with its versions.
        let (first, second) = match (external1, external2) {
            (External::NoVersions(..), External::FromDependencyOf(..)) => (external2, external1),
            _ => (external1, external2),
        };
        format!(
            "Because {} and {}, {}.",
            self.format_external(first),
            self.format_external(second),
            self.format_terms(current_terms)
        )
    }

    fn explain_both_ref(
        &self,
        ref_id1: usize,
        derived1: &Derived<Node, VSet, String>,
        ref_id2: usize,
        derived2: &Derived<Node, VSet, String>,
        current_terms: &Map<Node, Term<VSet>>,
    ) -> String {
        format!(
            "Because {} ({ref_id1}) and {} ({ref_id2}), {}.",
            self.format_terms(&derived1.terms),
            self.format_terms(&derived2.terms),
            self.format_terms(current_terms)
        )
    }

    fn explain_ref_and_external(
        &self,
        ref_id: usize,
        derived: &Derived<Node, VSet, String>,
        external: &Ext,
        current_terms: &Map<Node, Term<VSet>>,
    ) -> String {
        format!(
            "Because {} ({ref_id}) and {}, {}.",
            self.format_terms(&derived.terms),
            self.format_external(external),
            self.format_terms(current_terms)
        )
    }

    fn and_explain_external(&self, external: &Ext, current_terms: &Map<Node, Term<VSet>>) -> String {
        format!(
            "And because {}, {}.",
            self.format_external(external),
            self.format_terms(current_terms)
        )
    }

    fn and_explain_ref(
        &self,
        ref_id: usize,
        derived: &Derived<Node, VSet, String>,
        current_terms: &Map<Node, Term<VSet>>,
    ) -> String {
        format!(
            "And because {} ({ref_id}), {}.",
            self.format_terms(&derived.terms),
            self.format_terms(current_terms)
        )
    }

    fn and_explain_prior_and_external(
        &self,
        prior_external: &Ext,
        external: &Ext,
        current_terms: &Map<Node, Term<VSet>>,
    ) -> String {
        format!(
            "And because {} and {}, {}.",
            self.format_external(prior_external),
            self.format_external(external),
            self.format_terms(current_terms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> PackName {
        s.parse().unwrap()
    }

    fn req(s: &str) -> VersionReq {
        VersionReq::parse(s).unwrap()
    }

    fn ver(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    /// A catalog builder: `pack("acme/a", "1.0.0", &[("acme/core", "^1")])`.
    #[derive(Default)]
    struct Cat(Catalog);

    impl Cat {
        fn pack(mut self, n: &str, v: &str, deps: &[(&str, &str)]) -> Self {
            self.0.entry(name(n)).or_default().push(CandidateInfo {
                version: ver(v),
                yanked: false,
                deps: deps.iter().map(|(d, r)| (name(d), req(r))).collect(),
            });
            self
        }

        fn yanked(mut self, n: &str, v: &str) -> Self {
            for c in self.0.get_mut(&name(n)).unwrap() {
                if c.version == ver(v) {
                    c.yanked = true;
                }
            }
            self
        }
    }

    fn roots(specs: &[(&str, &str)]) -> Vec<(PackName, VersionReq)> {
        specs.iter().map(|(n, r)| (name(n), req(r))).collect()
    }

    fn picked(result: &BTreeMap<PackName, Version>) -> Vec<String> {
        result.iter().map(|(n, v)| format!("{n}@{v}")).collect()
    }

    #[test]
    fn side_by_side_gives_each_dependent_its_major() {
        let cat = Cat::default()
            .pack("acme/a", "1.0.0", &[("acme/core", "^1")])
            .pack("acme/b", "1.0.0", &[("acme/core", "^2.1")])
            .pack("acme/c", "1.0.0", &[("acme/core", "^0.3")])
            .pack("acme/core", "0.3.1", &[])
            .pack("acme/core", "1.0.0", &[])
            .pack("acme/core", "1.4.0", &[])
            .pack("acme/core", "2.0.0", &[])
            .pack("acme/core", "2.2.0", &[]);
        let r = roots(&[("acme/a", "*"), ("acme/b", "*")]);
        assert!(resolve(&r, &cat.0).is_err());
        let mut got: Vec<String> = resolve_side_by_side(&r, &cat.0)
            .unwrap()
            .iter()
            .map(|(n, v)| format!("{n}@{v}"))
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["acme/a@1.0.0", "acme/b@1.0.0", "acme/core@1.4.0", "acme/core@2.2.0"]
        );
        let r = roots(&[("acme/a", "*"), ("acme/c", "*")]);
        let got = resolve_side_by_side(&r, &cat.0).unwrap();
        assert!(
            got.iter().any(|(n, v)| n.as_str() == "acme/core" && *v == ver("0.3.1")),
            "{got:?}"
        );
        // Nothing to split: the same answer as plain resolution.
        let r = roots(&[("acme/a", "*")]);
        assert_eq!(resolve_side_by_side(&r, &cat.0).unwrap().len(), 2);
        // A requirement no version meets is still explained.
        let r = roots(&[("acme/core", "^9")]);
        assert!(resolve_side_by_side(&r, &cat.0).is_err());
    }

    #[test]
    fn resolve_diamond_picks_the_version_both_sides_accept() {
        let cat = Cat::default()
            .pack("acme/app", "1.0.0", &[("acme/a", "^1"), ("acme/b", "^1")])
            .pack("acme/a", "1.0.0", &[("acme/core", "^1")])
            .pack("acme/b", "1.0.0", &[("acme/core", ">=1.2, <1.6")])
            .pack("acme/core", "1.0.0", &[])
            .pack("acme/core", "1.2.0", &[])
            .pack("acme/core", "1.5.0", &[])
            .pack("acme/core", "1.7.0", &[])
            .pack("acme/core", "2.0.0", &[]);
        let got = resolve(&roots(&[("acme/app", "*")]), &cat.0).unwrap();
        assert_eq!(
            picked(&got),
            ["acme/a@1.0.0", "acme/app@1.0.0", "acme/b@1.0.0", "acme/core@1.5.0"]
        );
        // The order versions arrive in does not matter.
        let mut reversed = cat.0.clone();
        for versions in reversed.values_mut() {
            versions.reverse();
        }
        assert_eq!(resolve(&roots(&[("acme/app", "*")]), &reversed).unwrap(), got);
    }

    #[test]
    fn resolve_conflict_names_both_dependents_and_their_requirements() {
        let cat = Cat::default()
            .pack("acme/a", "1.0.0", &[("acme/core", "^2")])
            .pack("acme/b", "1.0.0", &[("acme/core", "^1")])
            .pack("acme/core", "1.0.0", &[])
            .pack("acme/core", "1.1.0", &[])
            .pack("acme/core", "2.0.0", &[]);
        let err = resolve(&roots(&[("acme/a", "^1"), ("acme/b", "^1")]), &cat.0).unwrap_err();
        assert_eq!(err.code(), "unresolvable", "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(
                "acme/a@1.0.0 needs acme/core ^2, but acme/b@1.0.0 needs acme/core ^1; \
                 no version of acme/core satisfies both"
            ) || msg.contains(
                "acme/b@1.0.0 needs acme/core ^1, but acme/a@1.0.0 needs acme/core ^2; \
                 no version of acme/core satisfies both"
            ),
            "{msg}"
        );
        assert!(msg.contains("your request needs acme/a ^1"), "{msg}");
        assert!(
            msg.contains("available versions of acme/core: 2.0.0, 1.1.0, 1.0.0"),
            "{msg}"
        );
    }

    #[test]
    fn resolve_never_picks_a_yanked_version() {
        let cat = Cat::default()
            .pack("acme/lib", "1.0.0", &[])
            .pack("acme/lib", "1.1.0", &[])
            .yanked("acme/lib", "1.1.0")
            .pack("acme/app", "1.0.0", &[("acme/lib", "^1.1")]);
        let got = resolve(&roots(&[("acme/lib", "^1")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/lib@1.0.0"]);

        let err = resolve(&roots(&[("acme/lib", "=1.1.0")]), &cat.0).unwrap_err();
        assert_eq!(err.code(), "unresolvable");
        let msg = err.to_string();
        assert!(msg.contains("1.1.0 (yanked)"), "{msg}");
        assert!(
            msg.contains("available versions of acme/lib: 1.1.0 (yanked), 1.0.0"),
            "{msg}"
        );

        // A dependency that only a yanked version satisfies fails as well.
        let err = resolve(&roots(&[("acme/app", "*")]), &cat.0).unwrap_err();
        assert_eq!(err.code(), "unresolvable");
        let msg = err.to_string();
        assert!(msg.contains("acme/app@1.0.0 needs acme/lib ^1.1"), "{msg}");
        assert!(msg.contains("1.1.0 (yanked)"), "{msg}");
    }

    #[test]
    fn resolve_reports_an_unknown_package_and_who_needs_it() {
        let cat = Cat::default().pack("acme/lib", "1.0.0", &[("acme/missing", "^1")]);
        let err = resolve(&roots(&[("acme/lib", "*")]), &cat.0).unwrap_err();
        assert_eq!(err.code(), "not_found", "{err}");
        assert_eq!(
            err.to_string(),
            "acme/missing (required by acme/lib@1.0.0) is not known to this node; \
             check the name with `packfed search`"
        );
        let ResolveError::NotFound { missing, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(missing, &[name("acme/missing")]);

        // Asked for directly.
        let err = resolve(&roots(&[("acme/nope", "^1")]), &cat.0).unwrap_err();
        assert_eq!(err.code(), "not_found");
        assert!(
            err.to_string()
                .starts_with("acme/nope (required by your request) is not known"),
            "{err}"
        );

        // A pack known with no versions counts as unknown.
        let mut empty = cat.0.clone();
        empty.insert(name("acme/missing"), Vec::new());
        assert_eq!(
            resolve(&roots(&[("acme/lib", "*")]), &empty).unwrap_err().code(),
            "not_found"
        );

        // When an older version avoids the unknown pack, it is used.
        let cat = cat.pack("acme/lib", "0.9.0", &[]);
        let got = resolve(&roots(&[("acme/lib", "*")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/lib@0.9.0"]);
    }

    #[test]
    fn resolve_two_root_specs_and_repeated_names() {
        let cat = Cat::default()
            .pack("acme/lib", "1.0.0", &[])
            .pack("acme/lib", "1.4.0", &[])
            .pack("acme/lib", "1.6.0", &[])
            .pack("acme/tool", "0.3.1", &[("acme/lib", "^1")])
            .pack("acme/tool", "0.4.0", &[]);
        let got = resolve(&roots(&[("acme/lib", "^1"), ("acme/tool", "~0.3")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/lib@1.6.0", "acme/tool@0.3.1"]);

        // The same pack twice: both requirements hold.
        let got = resolve(&roots(&[("acme/lib", "^1"), ("acme/lib", "<1.5")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/lib@1.4.0"]);
        let err = resolve(&roots(&[("acme/lib", "^1"), ("acme/lib", ">2")]), &cat.0).unwrap_err();
        assert_eq!(err.code(), "unresolvable");
        assert!(err.to_string().contains("acme/lib ^1, >2"), "{err}");

        // No roots: nothing to install.
        assert!(resolve(&[], &cat.0).unwrap().is_empty());
    }

    #[test]
    fn resolve_backtracks_to_an_older_version_when_the_newest_conflicts() {
        // The newest acme/a needs acme/core ^2, which acme/b rules out; a
        // greedy newest-first pick fails here, PubGrub settles on acme/a 1.x.
        let cat = Cat::default()
            .pack("acme/a", "1.0.0", &[("acme/core", "^1")])
            .pack("acme/a", "1.1.0", &[("acme/core", "^1")])
            .pack("acme/a", "2.0.0", &[("acme/core", "^2")])
            .pack("acme/b", "1.0.0", &[("acme/core", "^1.2")])
            .pack("acme/core", "1.0.0", &[])
            .pack("acme/core", "1.3.0", &[])
            .pack("acme/core", "2.0.0", &[]);
        let got = resolve(&roots(&[("acme/a", "*"), ("acme/b", "*")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/a@1.1.0", "acme/b@1.0.0", "acme/core@1.3.0"]);

        // Deeper: the newest acme/x leads, two steps down, to a pack with no
        // matching version.
        let cat = Cat::default()
            .pack("acme/x", "1.0.0", &[("acme/y", "^1")])
            .pack("acme/x", "2.0.0", &[("acme/y", "^2")])
            .pack("acme/y", "1.0.0", &[])
            .pack("acme/y", "2.0.0", &[("acme/z", "^3")])
            .pack("acme/z", "1.0.0", &[]);
        let got = resolve(&roots(&[("acme/x", "*")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/x@1.0.0", "acme/y@1.0.0"]);
    }

    #[test]
    fn resolve_translates_requirements_exactly_as_semver_matches() {
        let versions = [
            "0.1.0",
            "0.1.5",
            "0.2.0",
            "1.0.0-alpha.1",
            "1.0.0",
            "1.2.0",
            "1.2.3",
            "1.2.4-beta.1",
            "1.2.4",
            "1.9.9",
            "2.0.0-rc.1",
            "2.0.0",
            "3.1.0",
        ];
        let mut cat = Cat::default();
        for v in versions {
            cat = cat.pack("acme/lib", v, &[]);
        }
        let reqs = [
            "^1.2",
            "^0.1",
            "^0",
            "~1.2.3",
            "~1",
            "=1.2.3",
            "1.2.3",
            ">1.2.3",
            ">=1.2.4-beta.1",
            "<2",
            "<2.0.0-rc.1",
            "<=1.2.3",
            "*",
            "1.*",
            "1.2.*",
            "0.*",
            ">=1, <1.2.4",
            ">1.0.0-alpha.0, <1.0.0",
            "^2.0.0-rc.1",
            "=1.2.4-beta.1",
            ">=3.2",
            "~0.1.2",
        ];
        for r in reqs {
            let r = req(r);
            let expected = versions.iter().map(|v| ver(v)).filter(|v| r.matches(v)).max();
            let got = resolve(&[(name("acme/lib"), r.clone())], &cat.0);
            match expected {
                Some(v) => assert_eq!(got.unwrap()[&name("acme/lib")], v, "{r}"),
                None => assert_eq!(got.unwrap_err().code(), "unresolvable", "{r}"),
            }
        }
    }

    #[test]
    fn resolve_gives_up_past_its_step_budget() {
        let cat = Cat::default()
            .pack("acme/a", "1.0.0", &[("acme/core", "^1")])
            .pack("acme/a", "2.0.0", &[("acme/core", "^2")])
            .pack("acme/b", "1.0.0", &[("acme/core", "^1")])
            .pack("acme/core", "1.0.0", &[])
            .pack("acme/core", "2.0.0", &[]);
        let specs = roots(&[("acme/a", "*"), ("acme/b", "*")]);
        // The newest acme/a conflicts, so acme/a is chosen a second time.
        let err = resolve_within(&specs, &cat.0, 0).unwrap_err();
        assert_eq!(err.code(), "unresolvable");
        assert!(
            err.to_string()
                .contains("gave up after reconsidering its choices 0 times"),
            "{err}"
        );
        assert_eq!(
            picked(&resolve_within(&specs, &cat.0, 10).unwrap()),
            ["acme/a@1.0.0", "acme/b@1.0.0", "acme/core@1.0.0"]
        );
    }

    #[test]
    fn resolve_self_dependency_is_honoured() {
        let cat = Cat::default().pack("acme/loop", "1.0.0", &[("acme/loop", "^1")]).pack(
            "acme/loop",
            "2.0.0",
            &[("acme/loop", "^1")],
        );
        let got = resolve(&roots(&[("acme/loop", "*")]), &cat.0).unwrap();
        assert_eq!(picked(&got), ["acme/loop@1.0.0"]);
    }

    #[test]
    fn resolve_requirement_sets_hold_exactly_the_matching_known_versions() {
        let versions = [
            "0.9.0",
            "1.0.0-rc.1",
            "1.0.0",
            "1.1.0",
            "1.2.0-beta",
            "1.2.0",
            "2.0.0",
            "2.1.0",
        ];
        let mut cat = Cat::default();
        for v in versions {
            cat = cat.pack("acme/lib", v, &[]);
        }
        let provider = Provider::new(&[], &cat.0, MAX_RETRIES);
        for r in [
            "^1",
            ">=1.0.0-rc.1, <1.2.0",
            "=1.1.0",
            ">1.1.0, <2.0.0",
            "~1.2.0-beta",
            "*",
            "<1",
            "^3",
            "2.*",
        ] {
            let r = req(r);
            let set = provider.matching(&name("acme/lib"), &[&r]);
            for v in versions.map(ver) {
                assert_eq!(set.contains(&v), r.matches(&v), "{r} vs {v}");
            }
            // Canonical: the same known versions give the same set.
            let again: Vec<&VersionReq> = vec![&r, &r];
            assert_eq!(provider.matching(&name("acme/lib"), &again), set);
        }
        // Runs of consecutive known versions collapse into one interval.
        let set = provider.matching(&name("acme/lib"), &[&req(">=1.0.0, <1.2.0-beta")]);
        assert_eq!(set.iter().count(), 1, "{set}");
        // semver leaves 1.2.0-beta out of this one, which splits the run.
        let set = provider.matching(&name("acme/lib"), &[&req(">=1.0.0-rc.1, <2.0.0")]);
        assert_eq!(set.iter().count(), 2, "{set}");
        assert!(!set.contains(&ver("1.2.0-beta")) && set.contains(&ver("1.2.0")));
        assert!(provider.matching(&name("acme/lib"), &[&req("^3")]).is_empty());
    }
}
