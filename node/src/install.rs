//! `packfed install` and `packfed verify`: resolve versions, fetch archives,
//! check them against the publisher's signed release (hash and signature,
//! verified here, not by the daemon), unpack into a staging directory and
//! move into place only when everything succeeded, then write
//! `packfed.lock`. An install that fails leaves the target as it was.
//!
//! Layout of a target: `DIR/<namespace>/<name>/...` per pack,
//! `DIR/packfed.lock`, and packfed's state in `DIR/.packfed/` (see
//! [`crate::project`]: the lock, kept archives, transactions).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use packfed_protocol::records::{PackName, check_release};
use packfed_protocol::{ContentHash, FederationId, Signed, pb};
use serde::{Deserialize, Serialize};

use crate::client::{Client, UserError};
use crate::project::{Action, Project};
pub use crate::project::{LOCKFILE, LockedFile, LockedPack, Lockfile, verify};

/// What an install may override: the freshness check and the no-downgrade
/// rule (TUF's freeze and rollback protections).
#[derive(Debug, Clone, Copy, Default)]
pub struct Guards {
    pub allow_stale: bool,
    pub allow_downgrade: bool,
}

/// What the node's view rests on, checked before anything is resolved.
pub(crate) struct View {
    checkpoint: Option<String>,
    stale: bool,
}

#[derive(Deserialize)]
struct StatusResponse {
    #[serde(default)]
    fresh: bool,
    #[serde(default)]
    view_age_ms: Option<u64>,
    #[serde(default)]
    max_staleness_ms: Option<u64>,
}

#[derive(Deserialize)]
struct WitnessResponse {
    #[serde(default)]
    checkpoint: Option<String>,
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..=1_999 => format!("{ms} ms"),
        2_000..=119_999 => format!("{} s", ms / 1000),
        120_000..=7_199_999 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// Refuses a stale view (no checkpoints from a witness quorum newer than
/// the node's `max_staleness`) unless `allow_stale`.
pub(crate) async fn check_view(client: &Client, guards: Guards) -> Result<View> {
    let st: StatusResponse = client.get("/v1/status").await?;
    let w: WitnessResponse = client.get("/v1/witness").await?;
    if !st.fresh && !guards.allow_stale {
        let max = st.max_staleness_ms.map(human_ms).unwrap_or_else(|| "the limit".into());
        let why = match st.view_age_ms {
            Some(age) => format!(
                "this node's view of the federation is {} old: it holds no checkpoint from a witness quorum newer than {max}",
                human_ms(age)
            ),
            None => "this node holds no checkpoint from a witness quorum at all".to_string(),
        };
        return Err(UserError::new(
            "stale_view",
            format!(
                "{why}, so a yank or a failed check may be missing from it. Reconnect the node to the federation \
                 (`packfed witness status` lists the witnesses and their latest checkpoints) and retry, \
                 or pass --allow-stale to install from this view anyway"
            ),
        )
        .into());
    }
    Ok(View {
        checkpoint: w.checkpoint,
        stale: !st.fresh,
    })
}

/// Refuses when a directory a pack would be installed through
/// (`TARGET/ns`, `TARGET/ns/name`) is a symbolic link: moving the old
/// version aside and deleting it would follow the link out of the target.
fn refuse_links(target: &Path, name: &str) -> Result<()> {
    let mut at = target.to_path_buf();
    for part in name.split('/') {
        at.push(part);
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(UserError::new(
                "symlink_in_target",
                format!(
                    "{} is a symbolic link; install never follows a link it did not create. \
                     Remove the link (or install into another directory) and retry",
                    at.display()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Refuses to install a version lower than the target's lockfile pins.
pub(crate) fn check_downgrade(target: &Path, picks: &[Candidate], guards: Guards) -> Result<()> {
    if guards.allow_downgrade {
        return Ok(());
    }
    let Ok(Some(lock)) = Lockfile::read(target) else {
        return Ok(());
    };
    for (c, path) in picks.iter().zip(pick_paths(picks)) {
        let pinned = lock.packs.iter().find(|p| p.path == path).and_then(|p| p.version());
        if let Some(old) = pinned
            && c.version < old
        {
            return Err(UserError::new(
                "downgrade",
                format!(
                    "{} would go from {old} (in {}) down to {}; a lower version than the lockfile's is refused \
                     (a rollback). Pass --allow-downgrade to install it anyway",
                    c.release.name,
                    target.join(LOCKFILE).display(),
                    c.version
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// A requested pack: `ns/name` or `ns/name@REQ`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: PackName,
    pub req: semver::VersionReq,
}

impl std::str::FromStr for Spec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Spec> {
        let (name, req) = match s.split_once('@') {
            Some((n, r)) => (n, r),
            None => (s, "*"),
        };
        let name: PackName = name.parse().map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?;
        let req = semver::VersionReq::parse(req)
            .map_err(|e| anyhow::anyhow!("{s:?}: {req:?} is not a semver requirement (e.g. ^1.2 or =1.2.0): {e}"))?;
        Ok(Spec { name, req })
    }
}

/// A candidate release, verified.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub release: pb::Release,
    pub version: semver::Version,
    pub hash: ContentHash,
    pub publisher: String,
    pub record: String,
    pub yanked: bool,
    /// Why the acceptance policy quarantines it (empty: accepted).
    pub quarantine: Vec<String>,
    /// The owner's deprecation message (and replacement), as the node
    /// holds it.
    pub deprecated: Option<String>,
    pub deps: Vec<(PackName, semver::VersionReq)>,
}

#[derive(Deserialize)]
struct VersionsResponse {
    versions: Vec<VersionEntry>,
}

#[derive(Deserialize)]
struct VersionEntry {
    envelope: String,
    yanked: bool,
    status: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    deprecated: Option<DeprecationNotice>,
}

#[derive(Deserialize)]
struct DeprecationNotice {
    message: String,
    #[serde(default)]
    replacement: Option<String>,
}

impl DeprecationNotice {
    fn sentence(&self) -> String {
        match &self.replacement {
            Some(r) => format!("{} (use {r} instead)", self.message),
            None => self.message.clone(),
        }
    }
}

/// Fetches and verifies every version of a pack the node knows.
pub(crate) async fn candidates(client: &Client, fed: &FederationId, name: &PackName) -> Result<Vec<Candidate>> {
    let path = format!("/v1/packages/{}/{}", name.namespace(), name.name());
    let Some(resp) = client.get_opt::<VersionsResponse>(&path).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in resp.versions {
        let quarantine = match (v.status.as_str(), v.reasons.is_empty()) {
            ("accepted", _) => Vec::new(),
            (_, false) => v.reasons,
            (other, true) => vec![format!("status {other}")],
        };
        let bytes = hex::decode(&v.envelope).context("node sent a release that is not hex")?;
        let env = Signed::decode(&bytes)?;
        let verified = env
            .verify::<pb::Release>(fed)
            .with_context(|| format!("the node sent a release of {name} whose signature does not verify"))?;
        let facts = check_release(verified.record())?;
        if facts.id.name != *name {
            bail!("the node answered a query for {name} with {}", facts.id);
        }
        out.push(Candidate {
            version: facts.id.version.clone(),
            hash: facts.hash,
            publisher: verified.signer().to_hex(),
            record: verified.id().to_hex(),
            yanked: v.yanked,
            quarantine,
            deprecated: v.deprecated.as_ref().map(DeprecationNotice::sentence),
            deps: facts.dependencies,
            release: verified.record().clone(),
        });
    }
    out.sort_by(|a, b| b.version.cmp(&a.version));
    Ok(out)
}

/// At most this many packs are fetched while gathering what resolution may
/// need.
const MAX_CATALOG_PACKS: usize = 10_000;

/// How many packs' versions are fetched at once while gathering.
const CATALOG_FETCHES_IN_FLIGHT: usize = 8;

/// Picks one version per pack so that every requirement holds, with
/// PubGrub (see [`crate::resolve`]): first fetches and verifies every version
/// of every pack reachable from `specs` through the dependencies of any
/// non-yanked version, then resolves without further I/O. Prefers newer
/// versions, never picks a yanked one, backtracks on conflicts, and explains
/// failures by who required what.
pub async fn resolve(client: &Client, fed: &FederationId, specs: &[Spec]) -> Result<Vec<Candidate>> {
    resolve_with(client, fed, specs, Conflicts::Fail).await
}

/// What an install does when dependents need incompatible majors of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Conflicts {
    /// Refuse, explaining who needs what.
    #[default]
    Fail,
    /// Install each major needed, under `ns/name@MAJOR`.
    SideBySide,
}

/// [`resolve`], with a choice of what a conflict between majors does.
pub async fn resolve_with(
    client: &Client,
    fed: &FederationId,
    specs: &[Spec],
    conflicts: Conflicts,
) -> Result<Vec<Candidate>> {
    use futures_util::StreamExt;

    // Breadth-first over dependency names, one wave at a time.
    let mut known: BTreeMap<PackName, Vec<Candidate>> = BTreeMap::new();
    let mut seen: BTreeSet<PackName> = specs.iter().map(|s| s.name.clone()).collect();
    let mut wave: Vec<PackName> = seen.iter().cloned().collect();
    while !wave.is_empty() {
        let fetched: Vec<(PackName, Result<Vec<Candidate>>)> = futures_util::stream::iter(wave)
            .map(|name| async move {
                let found = candidates(client, fed, &name).await;
                (name, found)
            })
            .buffered(CATALOG_FETCHES_IN_FLIGHT)
            .collect()
            .await;
        let mut next = Vec::new();
        for (name, found) in fetched {
            let found = found?;
            // Yanked versions are never chosen, so what they need is moot.
            for (dep, _) in found.iter().filter(|c| !c.yanked).flat_map(|c| &c.deps) {
                if seen.insert(dep.clone()) {
                    if seen.len() > MAX_CATALOG_PACKS {
                        return Err(UserError::new(
                            "unresolvable",
                            format!(
                                "the dependencies of {} reach more than {MAX_CATALOG_PACKS} packs; \
                                 install fewer packs at once",
                                specs.iter().map(|s| s.name.to_string()).collect::<Vec<_>>().join(", ")
                            ),
                        )
                        .into());
                    }
                    next.push(dep.clone());
                }
            }
            known.insert(name, found);
        }
        wave = next;
    }

    let catalog: crate::resolve::Catalog = known
        .iter()
        .map(|(name, versions)| {
            let infos = versions
                .iter()
                .map(|c| crate::resolve::CandidateInfo {
                    version: c.version.clone(),
                    // Quarantined releases are never chosen, like yanked ones.
                    yanked: c.yanked || !c.quarantine.is_empty(),
                    deps: c.deps.clone(),
                })
                .collect();
            (name.clone(), infos)
        })
        .collect();
    let root: Vec<(PackName, semver::VersionReq)> = specs.iter().map(|s| (s.name.clone(), s.req.clone())).collect();
    let resolved = match crate::resolve::resolve(&root, &catalog) {
        Ok(one_each) => Ok(one_each.into_iter().collect::<Vec<_>>()),
        Err(e) if conflicts == Conflicts::SideBySide => {
            crate::resolve::resolve_side_by_side(&root, &catalog).map_err(|_| e)
        }
        Err(crate::resolve::ResolveError::Unresolvable { message }) => {
            Err(crate::resolve::ResolveError::Unresolvable {
                message: format!(
                    "{message}\n(to install each major that is needed side by side, pass --conflicts side-by-side)"
                ),
            })
        }
        Err(e) => Err(e),
    };
    let picks = resolved.map_err(|e| {
        // Say which policy rule refused a release the user asked for.
        let refused: Vec<String> = specs
            .iter()
            .flat_map(|s| {
                known
                    .get(&s.name)
                    .into_iter()
                    .flatten()
                    .filter(|c| !c.yanked && !c.quarantine.is_empty() && s.req.matches(&c.version))
                    .map(|c| format!("{}@{} is quarantined: {}", s.name, c.version, c.quarantine.join("; ")))
            })
            .collect();
        if refused.is_empty() {
            UserError::new(e.code(), e.message())
        } else {
            UserError::new(
                "quarantined",
                format!(
                    "{}. The acceptance policy refuses it until it satisfies those rules (see `packfed info`).",
                    refused.join(". ")
                ),
            )
        }
    })?;
    picks
        .into_iter()
        .map(|(name, version)| {
            known
                .get(&name)
                .and_then(|versions| versions.iter().find(|c| c.version == version))
                .cloned()
                .with_context(|| format!("resolution picked {name}@{version}, which was not fetched"))
        })
        .collect()
}

/// A user's install trust policy and the membership it reads roles from.
pub struct TrustContext {
    pub file: PathBuf,
    pub policy: packfed_governance::trust::TrustPolicy,
    pub genesis: packfed_governance::Genesis,
}

/// The trust policy from `--trust FILE`, else `[trust] file` in the config.
pub fn load_trust(home: &crate::config::Home, flag: Option<&Path>) -> Result<Option<TrustContext>> {
    let file = match flag {
        Some(f) => f.to_path_buf(),
        None => match home.load_config()?.trust.file {
            Some(f) => home.root.join(f),
            None => return Ok(None),
        },
    };
    let text = fs::read_to_string(&file).with_context(|| format!("reading the trust policy {}", file.display()))?;
    let policy = packfed_governance::trust::TrustPolicy::parse(&text)
        .map_err(|e| UserError::new("bad_trust_policy", format!("{}: {e}", file.display())))?;
    let genesis = packfed_governance::Genesis::parse(&fs::read(home.genesis())?)?;
    Ok(Some(TrustContext { file, policy, genesis }))
}

#[derive(Deserialize)]
struct AttestationEnvelope {
    envelope: Option<String>,
}

/// Checks a pick against the trust policy with attestations verified here
/// (signature, federation, subject): the node is not trusted to filter them.
/// Returns the ids of the attestations that satisfied it.
pub(crate) async fn check_trust(
    client: &Client,
    fed: &FederationId,
    t: &TrustContext,
    c: &Candidate,
) -> Result<Vec<String>> {
    use packfed_governance::evaluate::{AttestationFact, ReleaseFacts};
    let listed: Vec<AttestationEnvelope> = client
        .get(&format!("/v1/attestations/{}?version={}", c.release.name, c.version))
        .await?;
    let mut facts = Vec::new();
    for a in listed {
        let Some(hex_env) = a.envelope else { continue };
        let Ok(bytes) = hex::decode(&hex_env) else { continue };
        let Ok(env) = Signed::decode(&bytes) else { continue };
        let Ok(v) = env.verify::<pb::Attestation>(fed) else {
            continue;
        };
        let r = v.record();
        if r.name != c.release.name || r.version != c.release.version || r.content_hash != c.release.content_hash {
            continue;
        }
        let Ok(kind) = r.kind.parse() else { continue };
        facts.push(AttestationFact {
            id: v.id().0,
            attester: v.signer(),
            kind,
            result: if r.result == "pass" {
                packfed_governance::policy::Verdict::Pass
            } else {
                packfed_governance::policy::Verdict::Fail
            },
            time_ms: r.attested_at_ms,
        });
    }
    let publisher: packfed_protocol::PublicKey = c.publisher.parse()?;
    let release = ReleaseFacts {
        license: &c.release.license,
        quality: c.release.quality.as_ref().map(|q| q.score).unwrap_or(0),
        size: c.release.size,
        publisher,
    };
    let role_of = |k: &packfed_protocol::PublicKey| t.genesis.member(k).map(|m| m.role);
    let ev = t.policy.check(&release, &facts, &role_of);
    if !ev.failures.is_empty() {
        return Err(UserError::new(
            "untrusted",
            format!(
                "{}@{} does not satisfy the trust policy {}: {}",
                c.release.name,
                c.version,
                t.file.display(),
                ev.failures
                    .iter()
                    .map(|f| format!("{}: {}", f.rule, f.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .into());
    }
    Ok(ev.satisfied_by.iter().map(hex::encode).collect())
}

/// Downloads a blob into `file`, checking its BLAKE3 as it streams.
pub(crate) async fn download(
    client: &Client,
    c: &Candidate,
    file: &mut fs::File,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    use futures_util::StreamExt;
    // The node may first have to fetch the pack from its peers: show that
    // progress, then count the local copy again from where the bar started.
    let start = progress.position();
    prefetch(client, c, progress).await?;
    progress.set_position(start);
    progress.set_message("installing");
    let resp = client.download(&format!("/v1/blobs/{}", c.hash)).await?;
    let mut hasher = blake3::Hasher::new();
    let mut got: u64 = 0;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("download interrupted")?;
        got += chunk.len() as u64;
        if got > c.release.size {
            bail!(
                "{}@{}: the node sent more bytes than the signed size {}",
                c.release.name,
                c.version,
                c.release.size
            );
        }
        hasher.update(&chunk);
        file.write_all(&chunk)?;
        progress.inc(chunk.len() as u64);
    }
    let hash = ContentHash::from(hasher.finalize());
    if hash != c.hash || got != c.release.size {
        bail!(
            "{}@{}: downloaded bytes hash to {hash} ({got} bytes) but the publisher signed {} ({} bytes); nothing was installed",
            c.release.name,
            c.version,
            c.hash,
            c.release.size
        );
    }
    // No fsync: this is a temporary file, unpacked and deleted right away.
    Ok(())
}

/// Asks the node to fetch a pack it lacks from the federation, following
/// its progress lines on the bar.
async fn prefetch(client: &Client, c: &Candidate, progress: &indicatif::ProgressBar) -> Result<()> {
    use futures_util::StreamExt;
    let start = progress.position();
    // The size of the release this install verified, not whatever another
    // release naming the same hash claims.
    let resp = client
        .download(&format!("/v1/blobs/{}/fetch?size={}", c.hash, c.release.size))
        .await?;
    let mut stream = resp.bytes_stream();
    let mut line = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the node stopped answering while fetching from peers")?;
        for b in chunk {
            if b != b'\n' {
                if line.len() < 64 * 1024 {
                    line.push(b);
                }
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
            line.clear();
            if let Some(e) = v["error"].as_str() {
                bail!(
                    "{}@{}: the node could not fetch it from its peers: {e}",
                    c.release.name,
                    c.version
                );
            }
            if v["done"] == true {
                return Ok(());
            }
            if let Some(offset) = v["offset"].as_u64() {
                progress.set_message(format!("fetching {} from peers", c.release.name));
                progress.set_position(start + offset.min(c.release.size));
            }
        }
    }
    bail!(
        "{}@{}: the node ended the fetch without saying it finished",
        c.release.name,
        c.version
    )
}

pub(crate) fn progress_bar(total: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message("fetching");
    pb
}

/// The outcome of an install, upgrade or uninstall.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub installed: Vec<InstalledPack>,
    /// Packs the change took out (an upgrade's no longer needed ones).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    pub lockfile: String,
    /// The transaction recorded (`None`: the tree already was so).
    pub transaction: Option<String>,
    /// Deprecated packs among those installed, with their owners' messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The warning a deprecated pick earns.
pub(crate) fn deprecation_warnings(picks: &[Candidate]) -> Vec<String> {
    picks
        .iter()
        .filter_map(|c| {
            let d = c.deprecated.as_ref()?;
            Some(format!("{}@{} is deprecated: {d}", c.release.name, c.version))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct InstalledPack {
    pub id: String,
    pub hash: String,
}

/// A pack fetched, verified like an install, and unpacked into scratch
/// space (removed on drop).
pub struct Unpacked {
    pub pick: Candidate,
    scratch: tempfile::TempDir,
}

impl Unpacked {
    /// The pack's root directory.
    pub fn root(&self) -> PathBuf {
        self.scratch.path().join("pack")
    }
}

/// Resolves `spec` like an install (freshness, policy, trust), fetches the
/// picked release of that name, checks it against the signed hash and
/// size, and unpacks it outside any target.
pub async fn fetch_unpacked(
    client: &Client,
    fed: &FederationId,
    spec: &Spec,
    guards: Guards,
    trust: Option<&TrustContext>,
    show_progress: bool,
) -> Result<Unpacked> {
    use std::io::Seek;
    check_view(client, guards).await?;
    let picks = resolve(client, fed, std::slice::from_ref(spec)).await?;
    let pick = picks
        .into_iter()
        .find(|c| c.release.name == spec.name.as_str())
        .with_context(|| format!("resolution did not pick {}", spec.name))?;
    if let Some(t) = trust {
        check_trust(client, fed, t, &pick).await?;
    }
    let scratch = tempfile::Builder::new().prefix("packfed-pack-").tempdir()?;
    let mut file = tempfile::tempfile_in(scratch.path())?;
    let bar = progress_bar(pick.release.size, show_progress);
    download(client, &pick, &mut file, &bar).await?;
    bar.finish_and_clear();
    file.rewind()?;
    packfed_protocol::archive::unpack(
        std::io::BufReader::new(file),
        &scratch.path().join("pack"),
        packfed_protocol::archive::ReadLimits::for_archive(pick.release.size),
    )
    .with_context(|| format!("unpacking {}@{}", pick.release.name, pick.version))?;
    Ok(Unpacked { pick, scratch })
}

/// Where each pick lives inside a target: `ns/name`, or `ns/name@MAJOR`
/// (0.x: `@0.MINOR`) for a pack picked in several majors side by side.
pub(crate) fn pick_paths(picks: &[Candidate]) -> Vec<String> {
    picks
        .iter()
        .map(|c| {
            let several = picks.iter().filter(|o| o.release.name == c.release.name).count() > 1;
            match (several, c.version.major) {
                (false, _) => c.release.name.clone(),
                (true, 0) => format!("{}@0.{}", c.release.name, c.version.minor),
                (true, major) => format!("{}@{major}", c.release.name),
            }
        })
        .collect()
}

/// What a change does to the lockfile's requirements.
pub(crate) enum Requirements {
    /// Add these, replacing a requirement on the same pack (install).
    Add(Vec<Spec>),
    /// Exactly these (upgrade).
    Set(Vec<String>),
    /// As they are (install --locked).
    Keep,
}

/// How picks become the target's new content.
pub(crate) struct Change {
    pub action: Action,
    /// The target holds exactly the picks (upgrade), rather than the picks
    /// beside what it held (install).
    pub replace: bool,
    pub requirements: Requirements,
    /// Check kept packs file by file and unpack again what differs
    /// (install --locked: the tree must be exactly the lockfile's).
    pub verify_kept: bool,
    /// Remember that majors may stand side by side.
    pub side_by_side: bool,
}

impl Spec {
    /// `NAME@REQ`, as the lockfile's requirements hold it.
    pub fn to_requirement(&self) -> String {
        format!("{}@{}", self.name, self.req)
    }
}

/// One line of an install plan.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanStep {
    pub id: String,
    /// add, upgrade, downgrade or remove.
    pub action: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Bytes to fetch (the archive), 0 for a removal.
    pub size: u64,
}

/// What installing `picks` would change in a target holding `before`:
/// unchanged packs are left out; with `replace`, packs not picked go.
pub fn plan(before: Option<&Lockfile>, picks: &[Candidate], replace: bool) -> Vec<PlanStep> {
    let mut steps = Vec::new();
    let held = |path: &str| before.and_then(|l| l.packs.iter().find(|p| p.path == path));
    let paths = pick_paths(picks);
    for (c, path) in picks.iter().zip(&paths) {
        let to = c.version.to_string();
        let id = format!("{}@{to}", c.release.name);
        match held(path) {
            None => steps.push(PlanStep {
                id,
                action: "add",
                from: None,
                to: Some(to),
                size: c.release.size,
            }),
            Some(p) if p.hash == c.hash.to_hex() => {}
            Some(p) => {
                let from = p.version();
                steps.push(PlanStep {
                    id,
                    action: if from.as_ref().is_some_and(|f| *f > c.version) {
                        "downgrade"
                    } else {
                        "upgrade"
                    },
                    from: from.map(|v| v.to_string()),
                    to: Some(to),
                    size: c.release.size,
                });
            }
        }
    }
    if replace {
        for p in before.map(|l| l.packs.as_slice()).unwrap_or_default() {
            if !paths.contains(&p.path) {
                steps.push(PlanStep {
                    id: p.id.clone(),
                    action: "remove",
                    from: p.version().map(|v| v.to_string()),
                    to: None,
                    size: 0,
                });
            }
        }
    }
    steps
}

/// `packfed install --dry-run`: resolves and says what would change.
pub async fn install_plan(
    client: &Client,
    fed: &FederationId,
    specs: &[Spec],
    target: &Path,
    conflicts: Conflicts,
) -> Result<Vec<PlanStep>> {
    let picks = resolve_with(client, fed, specs, conflicts).await?;
    let before = Lockfile::read(target)?;
    Ok(plan(before.as_ref(), &picks, false))
}

/// Resolves, fetches, verifies and installs `specs` into `target`.
#[allow(clippy::too_many_arguments)]
pub async fn install(
    client: &Client,
    fed: &FederationId,
    specs: &[Spec],
    target: &Path,
    show_progress: bool,
    trust: Option<&TrustContext>,
    guards: Guards,
    conflicts: Conflicts,
) -> Result<Installed> {
    let view = check_view(client, guards).await?;
    let project = Project::open(target)?;
    let picks = resolve_with(client, fed, specs, conflicts).await?;
    check_downgrade(&project.root, &picks, guards)?;
    let hashes: Vec<ContentHash> = picks.iter().map(|p| p.hash).collect();
    let change = Change {
        action: Action::Install,
        replace: false,
        requirements: Requirements::Add(specs.to_vec()),
        verify_kept: false,
        side_by_side: conflicts == Conflicts::SideBySide,
    };
    let result = install_picks(client, fed, &project, picks, show_progress, trust, &view, change).await;
    // The local signal of federated learning (stays on this node). A node
    // that cannot take the report must not fail the install.
    let ok = result.is_ok();
    for h in hashes {
        let report = serde_json::json!({"hash": h.to_hex(), "ok": ok});
        if let Err(e) = client
            .post_json::<serde_json::Value>("/v1/learn/install", &report)
            .await
        {
            tracing::debug!(error = %e, "install not reported to the node");
        }
    }
    result
}

/// Installs exactly what `TARGET/packfed.lock` pins (same releases, same
/// bytes), without resolving: every pinned record must still be known to
/// the node, accepted, and name the pinned hash.
pub async fn install_locked(
    client: &Client,
    fed: &FederationId,
    target: &Path,
    show_progress: bool,
    trust: Option<&TrustContext>,
    guards: Guards,
) -> Result<Installed> {
    let view = check_view(client, guards).await?;
    let project = Project::open(target)?;
    let lock_path = project.root.join(LOCKFILE);
    let lock = project.lockfile()?.ok_or_else(|| {
        UserError::new(
            "no_lockfile",
            format!("{} does not exist; install by name first", lock_path.display()),
        )
    })?;
    if lock.federation != fed.to_hex() {
        return Err(UserError::new(
            "wrong_federation",
            format!(
                "{} was written for federation {}, this home is in {}",
                lock_path.display(),
                lock.federation,
                fed
            ),
        )
        .into());
    }
    let mut picks = Vec::new();
    for p in &lock.packs {
        let name: PackName = p.name().parse()?;
        let found = candidates(client, fed, &name).await?;
        let c = found.into_iter().find(|c| c.record == p.record).ok_or_else(|| {
            UserError::new(
                "locked_missing",
                format!(
                    "{} pins release record {} of {}, which this node does not know",
                    LOCKFILE, p.record, p.id
                ),
            )
        })?;
        if c.hash.to_hex() != p.hash {
            bail!(
                "{}: the pinned record names {} but the lockfile says {}",
                p.id,
                c.hash,
                p.hash
            );
        }
        if !c.quarantine.is_empty() {
            return Err(UserError::new(
                "quarantined",
                format!("{} is quarantined: {}", p.id, c.quarantine.join("; ")),
            )
            .into());
        }
        picks.push(c);
    }
    let change = Change {
        action: Action::Install,
        replace: true,
        requirements: Requirements::Keep,
        verify_kept: true,
        side_by_side: false,
    };
    install_picks(client, fed, &project, picks, show_progress, trust, &view, change).await
}

/// Fetches what is not kept yet, then commits the change as one
/// transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn install_picks(
    client: &Client,
    fed: &FederationId,
    project: &Project,
    picks: Vec<Candidate>,
    show_progress: bool,
    trust: Option<&TrustContext>,
    view: &View,
    change: Change,
) -> Result<Installed> {
    let mut trusted_by = BTreeMap::new();
    if let Some(t) = trust {
        for c in &picks {
            trusted_by.insert(c.record.clone(), check_trust(client, fed, t, c).await?);
        }
    }
    for c in &picks {
        refuse_links(&project.root, &c.release.name)?;
    }
    let before_text = project.lockfile_text()?;
    let before = match &before_text {
        Some(t) => Lockfile::parse(t, &project.root.join(LOCKFILE))?,
        None => Lockfile::empty(fed.to_hex()),
    };

    // Phase 1: fetch every archive the change will unpack and the target
    // does not keep intact; each is checked against the signed hash as it
    // streams. A pack left in place (same path and hash, directory present)
    // needs no archive, so its kept copy is not hashed again here.
    let paths = pick_paths(&picks);
    let unpacks = |c: &Candidate, path: &str| {
        change.verify_kept
            || !project.root.join(path).is_dir()
            || !before.packs.iter().any(|p| p.path == path && p.hash == c.hash.to_hex())
    };
    let changed: Vec<&Candidate> = picks
        .iter()
        .zip(&paths)
        .filter(|(c, path)| unpacks(c, path) && !project.has_archive(&c.hash))
        .map(|(c, _)| c)
        .collect();
    let bar = progress_bar(changed.iter().map(|c| c.release.size).sum(), show_progress);
    for c in changed {
        let mut file = project.scratch_file()?;
        download(client, c, file.as_file_mut(), &bar).await?;
        project.keep_archive(file, &c.hash)?;
    }
    bar.finish_and_clear();

    // Phase 2: stage and commit.
    let new_packs: Vec<LockedPack> = picks
        .iter()
        .zip(paths)
        .map(|(c, path)| LockedPack {
            id: format!("{}@{}", c.release.name, c.version),
            hash: c.hash.to_hex(),
            publisher: c.publisher.clone(),
            record: c.record.clone(),
            path,
            size: c.release.size,
            dependencies: c.deps.iter().map(|(n, r)| (n.to_string(), r.to_string())).collect(),
            attestations: trusted_by.remove(&c.record).unwrap_or_default(),
            files: Vec::new(),
        })
        .collect();
    let mut desired: Vec<LockedPack> = if change.replace {
        Vec::new()
    } else {
        before
            .packs
            .iter()
            .filter(|p| !new_packs.iter().any(|n| n.path == p.path))
            .cloned()
            .collect()
    };
    desired.extend(new_packs);
    desired.sort_by(|a, b| a.path.cmp(&b.path));
    let staged = project.stage(desired, change.verify_kept)?;
    let mut lock = before.clone();
    lock.checkpoint = view.checkpoint.clone();
    lock.allow_stale = view.stale;
    lock.packs = staged.packs().to_vec();
    lock.side_by_side |= change.side_by_side;
    match change.requirements {
        Requirements::Add(specs) => {
            for s in specs {
                lock.requirements
                    .retain(|r| r.split_once('@').map(|(n, _)| n) != Some(s.name.as_str()));
                lock.requirements.push(s.to_requirement());
            }
        }
        Requirements::Set(reqs) => lock.requirements = reqs,
        Requirements::Keep => {}
    }
    lock.requirements.sort();
    let removed: Vec<String> = before
        .packs
        .iter()
        .filter(|p| !lock.packs.iter().any(|n| n.path == p.path))
        .map(|p| p.id.clone())
        .collect();
    let after_text = lock.to_text()?;
    let transaction = if before_text.as_deref() == Some(after_text.as_str()) {
        None
    } else {
        Some(
            staged
                .commit(change.action, before_text, Some(after_text), None)?
                .transaction,
        )
    };
    Ok(Installed {
        warnings: deprecation_warnings(&picks),
        installed: picks
            .iter()
            .map(|c| InstalledPack {
                id: format!("{}@{}", c.release.name, c.version),
                hash: c.hash.to_hex(),
            })
            .collect(),
        removed,
        lockfile: project.root.join(LOCKFILE).display().to_string(),
        transaction,
    })
}
