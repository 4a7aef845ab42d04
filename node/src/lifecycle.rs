//! What happens to installed packs after the install: `outdated`,
//! `upgrade`, `uninstall`, `history` and `rollback`. Each change is one
//! transaction of the target ([`crate::project`]); `uninstall`, `history`
//! and `rollback` need no node, since the target keeps its archives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use packfed_protocol::FederationId;
use serde::Serialize;

use crate::client::{Client, UserError};
use crate::install::{self, Change, Guards, Installed, Requirements, Spec, TrustContext};
use crate::project::{Action, LOCKFILE, Lockfile, Project, Transaction};

fn no_lockfile(dir: &Path) -> anyhow::Error {
    UserError::new(
        "no_lockfile",
        format!(
            "{} has no {LOCKFILE}: nothing is installed there (install with `packfed install NAME --to {}`)",
            dir.display(),
            dir.display()
        ),
    )
    .into()
}

/// The requirements to resolve again: the lockfile's, or for a lockfile
/// written before they were recorded, each pack at its own major.
fn requirements(lock: &Lockfile) -> Result<Vec<Spec>> {
    if !lock.requirements.is_empty() {
        return lock.requirements.iter().map(|r| r.parse()).collect();
    }
    lock.packs
        .iter()
        .filter_map(|p| Some(format!("{}@^{}", p.name(), p.version()?)))
        .map(|r| r.parse())
        .collect()
}

/// How re-resolution treats majors: as the install that wrote the lockfile did.
fn conflicts(lock: &Lockfile) -> install::Conflicts {
    if lock.side_by_side {
        install::Conflicts::SideBySide
    } else {
        install::Conflicts::Fail
    }
}

/// One row of `packfed outdated`.
#[derive(Debug, Serialize)]
pub struct Outdated {
    pub name: String,
    pub installed: String,
    /// The newest version the requirements allow.
    pub wanted: Option<String>,
    /// The newest version the node offers (not yanked, not quarantined).
    pub latest: Option<String>,
}

/// Installed packs that have a newer version allowed or available.
pub async fn outdated(client: &Client, fed: &FederationId, dir: &Path) -> Result<Vec<Outdated>> {
    let lock = Lockfile::read(dir)?.ok_or_else(|| no_lockfile(dir))?;
    let wanted: BTreeMap<String, String> = install::resolve_with(client, fed, &requirements(&lock)?, conflicts(&lock))
        .await?
        .into_iter()
        .map(|c| (c.release.name.clone(), c.version.to_string()))
        .collect();
    let mut rows = Vec::new();
    for p in &lock.packs {
        let installed = p.version().map(|v| v.to_string()).unwrap_or_default();
        let latest = install::candidates(client, fed, &p.name().parse()?)
            .await?
            .into_iter()
            .find(|c| !c.yanked && c.quarantine.is_empty())
            .map(|c| c.version.to_string());
        let wanted = wanted.get(p.name()).cloned();
        if wanted.as_deref() != Some(installed.as_str()) || latest.as_deref() != Some(installed.as_str()) {
            rows.push(Outdated {
                name: p.name().to_string(),
                installed,
                wanted,
                latest,
            });
        }
    }
    Ok(rows)
}

/// The outcome of `packfed upgrade`.
#[derive(Debug, Serialize)]
pub struct Upgraded {
    #[serde(flatten)]
    pub installed: Installed,
    /// `--latest` moves across a major version, said out loud.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crossed_majors: Vec<String>,
}

pub struct UpgradeOptions<'a> {
    pub names: &'a [String],
    pub latest: bool,
    pub show_progress: bool,
    pub trust: Option<&'a TrustContext>,
    pub guards: Guards,
}

/// Resolves the requirements again to the newest versions they allow
/// (with `--latest`: the newest there is, requirements rewritten to it).
/// Named packs change; every other one stays pinned to its version.
pub async fn upgrade(client: &Client, fed: &FederationId, dir: &Path, opts: UpgradeOptions<'_>) -> Result<Upgraded> {
    let view = install::check_view(client, opts.guards).await?;
    let project = Project::open(dir)?;
    let lock = project.lockfile()?.ok_or_else(|| no_lockfile(dir))?;
    for n in opts.names {
        if lock.pack(n).is_none() {
            return Err(UserError::new("not_installed", format!("{n} is not installed in {}", dir.display())).into());
        }
    }
    let named = |name: &str| opts.names.is_empty() || opts.names.iter().any(|n| n == name);
    let mut roots = requirements(&lock)?;
    if opts.latest {
        for r in roots.iter_mut().filter(|r| named(r.name.as_str())) {
            r.req = semver::VersionReq::STAR;
        }
    }
    // Packs the user did not name keep their versions.
    let mut resolve_with = roots.clone();
    for p in lock.packs.iter().filter(|p| !named(p.name())) {
        if let Some(v) = p.version() {
            resolve_with.push(format!("{}@={v}", p.name()).parse()?);
        }
    }
    let picks = install::resolve_with(client, fed, &resolve_with, conflicts(&lock)).await.map_err(|e| {
        if opts.names.is_empty() {
            e
        } else {
            e.context(format!(
                "upgrading {} needs other installed packs to change as well; name them too, or run upgrade without names",
                opts.names.join(", ")
            ))
        }
    })?;
    install::check_downgrade(&project.root, &picks, opts.guards)?;
    let mut crossed = Vec::new();
    for c in &picks {
        if let Some(old) = lock.pack(&c.release.name).and_then(|p| p.version())
            && old.major != c.version.major
        {
            crossed.push(format!("{} {old} -> {}", c.release.name, c.version));
        }
    }
    // Requirements --latest moved are rewritten to the new major.
    let reqs: Vec<String> = roots
        .iter()
        .map(|r| match picks.iter().find(|c| c.release.name == r.name.as_str()) {
            Some(c) if opts.latest && named(r.name.as_str()) => format!("{}@^{}", r.name, c.version),
            _ => r.to_requirement(),
        })
        .collect();
    let change = Change {
        action: Action::Upgrade,
        replace: true,
        requirements: Requirements::Set(reqs),
        verify_kept: false,
        side_by_side: false,
    };
    let installed = install::install_picks(
        client,
        fed,
        &project,
        picks,
        opts.show_progress,
        opts.trust,
        &view,
        change,
    )
    .await?;
    Ok(Upgraded {
        installed,
        crossed_majors: crossed,
    })
}

/// The outcome of `packfed uninstall`.
#[derive(Debug, Serialize)]
pub struct Uninstalled {
    pub removed: Vec<String>,
    pub transaction: String,
}

/// Removes `names`, and the dependencies nothing needs any more. Refuses
/// (unless `force`) when a pack that stays depends on one of them.
pub fn uninstall(dir: &Path, names: &[String], force: bool) -> Result<Uninstalled> {
    let project = Project::open(dir)?;
    let before_text = project.lockfile_text()?.ok_or_else(|| no_lockfile(dir))?;
    let mut lock = Lockfile::parse(&before_text, &project.root.join(LOCKFILE))?;
    for n in names {
        if lock.pack(n).is_none() {
            return Err(UserError::new("not_installed", format!("{n} is not installed in {}", dir.display())).into());
        }
    }
    let going: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    if !force {
        let mut blocked = Vec::new();
        for p in lock.packs.iter().filter(|p| !going.contains(p.name())) {
            for dep in p.dependencies.keys().filter(|d| going.contains(d.as_str())) {
                blocked.push(format!("{} depends on {dep}", p.id));
            }
        }
        if !blocked.is_empty() {
            return Err(UserError::new(
                "has_dependents",
                format!(
                    "{}; uninstall those too, or pass --force to remove anyway",
                    blocked.join(", ")
                ),
            )
            .into());
        }
    }
    // A lockfile from before requirements were recorded cannot tell roots
    // from dependencies: it keeps everything not named.
    let knows_roots = !lock.requirements.is_empty();
    lock.requirements
        .retain(|r| !going.contains(r.split_once('@').map(|(n, _)| n).unwrap_or(r)));
    // Keep what a requirement names, and what a kept pack needs.
    let required: BTreeSet<String> = lock
        .requirements
        .iter()
        .map(|r| r.split_once('@').map(|(n, _)| n).unwrap_or(r).to_string())
        .collect();
    let mut keep: BTreeSet<String> = lock
        .packs
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| required.contains(n) || (!knows_roots && !going.contains(n.as_str())))
        .collect();
    loop {
        let needed: Vec<String> = lock
            .packs
            .iter()
            .filter(|p| keep.contains(p.name()))
            .flat_map(|p| p.dependencies.keys().cloned())
            .filter(|d| !going.contains(d.as_str()) && !keep.contains(d))
            .collect();
        if needed.is_empty() {
            break;
        }
        keep.extend(needed);
    }
    let removed: Vec<String> = lock
        .packs
        .iter()
        .filter(|p| !keep.contains(p.name()))
        .map(|p| p.id.clone())
        .collect();
    lock.packs.retain(|p| keep.contains(p.name()));
    let staged = project.stage(lock.packs.clone(), false)?;
    let tx = staged.commit(Action::Uninstall, Some(before_text), Some(lock.to_text()?), None)?;
    Ok(Uninstalled {
        removed,
        transaction: tx.transaction,
    })
}

/// One line of `packfed history`.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub transaction: String,
    pub time: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undoes: Option<String>,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// Transactions of a target, newest first.
pub fn history(dir: &Path) -> Result<Vec<HistoryEntry>> {
    if Lockfile::read(dir)?.is_none() && !dir.join(crate::project::STATE_DIR).is_dir() {
        return Err(no_lockfile(dir));
    }
    let project = Project::open(dir)?;
    Ok(project
        .transactions()?
        .into_iter()
        .rev()
        .map(|t| HistoryEntry {
            transaction: t.transaction,
            time: t.time,
            action: t.action,
            undoes: t.undoes,
            before: t.before,
            after: t.after,
        })
        .collect())
}

/// The outcome of `packfed rollback`.
#[derive(Debug, Serialize)]
pub struct RolledBack {
    /// The transaction whose before-state the target now holds.
    pub restored_to: String,
    /// The rollback's own transaction.
    pub transaction: String,
    pub packs: Vec<String>,
}

/// The newest change not undone yet: rollbacks are skipped, and so is what
/// a rollback (itself not undone) undid. Repeated rollbacks walk back.
fn last_undoable(txs: &[Transaction]) -> Option<&Transaction> {
    let mut undone = BTreeSet::new();
    for t in txs.iter().rev() {
        if undone.contains(&t.transaction) {
            continue;
        }
        match (&t.action, &t.undoes) {
            (Action::Rollback, Some(u)) => {
                undone.insert(u.clone());
            }
            _ => return Some(t),
        }
    }
    None
}

/// Restores the tree and lockfile of before transaction `id` (default:
/// the last one not undone), from the kept archives, verified.
pub fn rollback(dir: &Path, id: Option<&str>) -> Result<RolledBack> {
    let project = Project::open(dir)?;
    let txs = project.transactions()?;
    let target = match id {
        Some(id) => {
            let want = id
                .parse::<u64>()
                .map(|n| format!("{n:06}"))
                .unwrap_or_else(|_| id.to_string());
            txs.iter().find(|t| t.transaction == want).ok_or_else(|| {
                UserError::new(
                    "no_transaction",
                    format!(
                        "{} has no transaction {id}; `packfed history --in {}` lists them",
                        dir.display(),
                        dir.display()
                    ),
                )
            })?
        }
        None => last_undoable(&txs).ok_or_else(|| {
            UserError::new(
                "nothing_to_roll_back",
                format!("{} has no change left to roll back", dir.display()),
            )
        })?,
    };
    let desired = match &target.before_lock {
        Some(text) => {
            Lockfile::parse(text, &project.root.join(LOCKFILE))
                .context("the transaction's recorded lockfile")?
                .packs
        }
        None => Vec::new(),
    };
    let before = project.lockfile_text()?;
    let staged = project.stage(desired, true)?;
    let tx = staged.commit(
        Action::Rollback,
        before,
        target.before_lock.clone(),
        Some(target.transaction.clone()),
    )?;
    // The restored tree is checked file by file against its lockfile.
    if target.before_lock.is_some() {
        let v = crate::project::verify(&project.root)?;
        if !v.ok {
            anyhow::bail!(
                "the restored tree differs from its lockfile: {}",
                v.mismatches
                    .iter()
                    .map(|m| format!("{}: {}", m.path, m.problem))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    Ok(RolledBack {
        restored_to: target.transaction.clone(),
        transaction: tx.transaction,
        packs: tx.after,
    })
}
