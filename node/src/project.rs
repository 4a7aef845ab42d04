//! A project's install directory: `packfed.lock`, and `.packfed/` beside
//! it with the lock that serializes changes, the archive of every release
//! the directory has held (verified again by hash whenever it is unpacked),
//! and the transaction log that `history` lists and `rollback` replays.
//!
//! Every change (install, upgrade, uninstall, rollback) goes the same way:
//! [`Project::stage`] unpacks what is new into a staging directory beside
//! the tree, then [`Staged::commit`] moves packs aside and into place,
//! records the transaction (lockfile before and after) and writes the
//! lockfile; a failure at any step puts the moved packs back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use packfed_protocol::ContentHash;
use packfed_protocol::archive::{self, EntryKind, ReadLimits};
use serde::{Deserialize, Serialize};

use crate::client::UserError;
use crate::config::{sync_dir, write_atomic};

/// The lockfile's name inside a target directory.
pub const LOCKFILE: &str = "packfed.lock";

/// packfed's own state inside a target directory.
pub const STATE_DIR: &str = ".packfed";

/// Largest transaction record read back.
const MAX_TRANSACTION_BYTES: u64 = 16 * 1024 * 1024;

/// `packfed.lock`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lockfile {
    pub version: u32,
    pub federation: String,
    /// The newest witness checkpoint the node's view rested on when this
    /// was resolved (record id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Resolved on a stale view (`--allow-stale`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_stale: bool,
    /// What the user asked for (`NAME@REQ`), which `outdated` and
    /// `upgrade` resolve again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<String>,
    /// Installed with `--conflicts side-by-side`: re-resolutions (upgrade,
    /// outdated) may keep several majors of a pack too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub side_by_side: bool,
    #[serde(default, rename = "pack")]
    pub packs: Vec<LockedPack>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedPack {
    pub id: String,
    pub hash: String,
    pub publisher: String,
    pub record: String,
    /// Relative to the target directory.
    pub path: String,
    /// The archive's size in bytes.
    #[serde(default)]
    pub size: u64,
    /// What this release requires (name -> requirement), so uninstall can
    /// name dependents without asking a node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    /// Attestations that satisfied the install trust policy (record ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<String>,
    #[serde(default, rename = "file")]
    pub files: Vec<LockedFile>,
}

impl LockedPack {
    /// `ns/name` of `ns/name@version`.
    pub fn name(&self) -> &str {
        self.id.split_once('@').map(|(n, _)| n).unwrap_or(&self.id)
    }

    pub fn version(&self) -> Option<semver::Version> {
        semver::Version::parse(self.id.split_once('@')?.1).ok()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedFile {
    pub path: String,
    /// BLAKE3 of a file's content; a symlink's target for links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default)]
    pub size: u64,
}

impl Lockfile {
    pub fn empty(federation: String) -> Lockfile {
        Lockfile {
            version: 1,
            federation,
            checkpoint: None,
            allow_stale: false,
            requirements: Vec::new(),
            side_by_side: false,
            packs: Vec::new(),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Lockfile> {
        toml::from_str(text).with_context(|| format!("{} is not a valid lockfile", path.display()))
    }

    pub fn to_text(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Reads `DIR/packfed.lock`, `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Lockfile>> {
        let path = dir.join(LOCKFILE);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(Lockfile::parse(&t, &path)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The locked pack of that name at its plain path (`ns/name`).
    pub fn pack(&self, name: &str) -> Option<&LockedPack> {
        self.packs.iter().find(|p| p.name() == name)
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Install,
    Upgrade,
    Uninstall,
    Rollback,
}

/// One change of a target directory, as `.packfed/transactions/ID.json`
/// holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub time_ms: u64,
    pub action: Action,
    /// For a rollback: the transaction whose before-state it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<String>,
    /// Pack ids before and after.
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// The lockfiles' exact bytes (`None`: there was none).
    pub before_lock: Option<String>,
    pub after_lock: Option<String>,
}

/// `YYYY-MM-DDTHH:MM:SSZ` of milliseconds since the epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A target directory, locked against other packfed commands for as long
/// as this value lives.
pub struct Project {
    pub root: PathBuf,
    _lock: fs::File,
    /// This open created the state directory (and the target, if `Some`):
    /// a change that never commits takes them away again, so a failed
    /// install leaves the target as it was.
    created: Option<Option<PathBuf>>,
    committed: std::cell::Cell<bool>,
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.committed.get() {
            return;
        }
        // Another command that raced this one to create the directory may
        // have committed meanwhile: its transactions stay.
        let untouched = fs::read_dir(self.root.join(STATE_DIR).join("transactions"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if let (Some(target), true) = (&self.created, untouched) {
            let _ = fs::remove_dir_all(self.root.join(STATE_DIR));
            if let Some(t) = target {
                let _ = fs::remove_dir(t);
            }
        }
    }
}

fn ids(lock: Option<&Lockfile>) -> Vec<String> {
    lock.map(|l| l.packs.iter().map(|p| p.id.clone()).collect())
        .unwrap_or_default()
}

impl Project {
    /// Opens (creating) `dir` and takes its lock: a second command on the
    /// same directory waits here until the first is done.
    pub fn open(dir: &Path) -> Result<Project> {
        let created = (!dir.join(STATE_DIR).exists()).then(|| (!dir.exists()).then(|| dir.to_path_buf()));
        fs::create_dir_all(dir.join(STATE_DIR).join("transactions"))
            .with_context(|| format!("creating {}", dir.join(STATE_DIR).display()))?;
        fs::create_dir_all(dir.join(STATE_DIR).join("archives"))?;
        let root = dir.canonicalize()?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(STATE_DIR).join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                eprintln!(
                    "waiting for another packfed command to finish changing {}",
                    root.display()
                );
                lock.lock()?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).context("locking the target directory"),
        }
        Ok(Project {
            root,
            _lock: lock,
            created,
            committed: std::cell::Cell::new(false),
        })
    }

    pub fn lockfile_text(&self) -> Result<Option<String>> {
        let path = self.root.join(LOCKFILE);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn lockfile(&self) -> Result<Option<Lockfile>> {
        Lockfile::read(&self.root)
    }

    /// Where the archive of `hash` is kept.
    pub fn archive(&self, hash: &str) -> PathBuf {
        self.root
            .join(STATE_DIR)
            .join("archives")
            .join(format!("{hash}.tar.zst"))
    }

    /// Whether the archive of `hash` is kept and still hashes to it.
    pub fn has_archive(&self, hash: &ContentHash) -> bool {
        hash_file(&self.archive(&hash.to_hex())).is_ok_and(|h| h == *hash)
    }

    /// A temporary file inside the state directory (same file system as the
    /// archives, so [`Project::keep_archive`] is a rename).
    pub fn scratch_file(&self) -> Result<tempfile::NamedTempFile> {
        Ok(tempfile::NamedTempFile::new_in(self.root.join(STATE_DIR))?)
    }

    /// Keeps a downloaded archive whose hash the caller checked.
    pub fn keep_archive(&self, file: tempfile::NamedTempFile, hash: &ContentHash) -> Result<()> {
        file.as_file().sync_all()?;
        let dest = self.archive(&hash.to_hex());
        file.persist(&dest).map_err(|e| e.error)?;
        sync_dir(dest.parent().context("path")?)?;
        Ok(())
    }

    /// Every transaction, oldest first.
    pub fn transactions(&self) -> Result<Vec<Transaction>> {
        let dir = self.root.join(STATE_DIR).join("transactions");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)? {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            if fs::metadata(&path)?.len() > MAX_TRANSACTION_BYTES {
                bail!("{} is larger than any transaction record", path.display());
            }
            let t: Transaction = serde_json::from_slice(&fs::read(&path)?)
                .with_context(|| format!("{} is not a transaction record", path.display()))?;
            out.push(t);
        }
        out.sort_by(|a, b| a.transaction.cmp(&b.transaction));
        Ok(out)
    }

    /// Prepares the tree to hold exactly `desired`: packs already in place
    /// with the same hash are kept (their directory present, and checked
    /// file by file first when `verify_kept`), every other one is unpacked from its kept archive
    /// into staging, its files recorded. A desired pack that lists files
    /// (a rollback) must unpack to exactly those.
    pub fn stage(&self, desired: Vec<LockedPack>, verify_kept: bool) -> Result<Staged<'_>> {
        let current = self.lockfile()?.map(|l| l.packs).unwrap_or_default();
        let staging = tempfile::Builder::new()
            .prefix("staging-")
            .tempdir_in(self.root.join(STATE_DIR))?;
        let mut packs = Vec::with_capacity(desired.len());
        let mut unpacked = Vec::new();
        for mut d in desired {
            let kept = current.iter().find(|c| c.path == d.path && c.hash == d.hash);
            if let Some(c) = kept
                && self.root.join(&c.path).is_dir()
                && (!verify_kept || verify_pack(&self.root, c)?.is_empty())
            {
                d.files = c.files.clone();
                packs.push(d);
                continue;
            }
            let archive = self.archive(&d.hash);
            let expected: ContentHash = d.hash.parse().context("lockfile hash")?;
            let actual = hash_file(&archive).map_err(|_| {
                UserError::new(
                    "archive_missing",
                    format!(
                        "{} is not kept in {}; install it again by name",
                        d.id,
                        archive
                            .parent()
                            .map(Path::display)
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    ),
                )
            })?;
            if actual != expected {
                bail!(
                    "the kept archive of {} hashes to {actual}, not {expected}: it was modified; install it again by name",
                    d.id
                );
            }
            let size = fs::metadata(&archive)?.len();
            let dest = staging.path().join("new").join(&d.path);
            let entries = archive::unpack(
                BufReader::new(fs::File::open(&archive)?),
                &dest,
                ReadLimits::for_archive(size),
            )
            .with_context(|| format!("unpacking {}", d.id))?;
            let mut files: Vec<LockedFile> = entries
                .iter()
                .filter(|e| e.kind != EntryKind::Dir)
                .map(|e| LockedFile {
                    path: e.path.clone(),
                    hash: e.hash.map(|h| h.to_hex()),
                    link: match e.hash {
                        Some(_) => None,
                        None => fs::read_link(dest.join(&e.path))
                            .ok()
                            .and_then(|t| t.to_str().map(str::to_string)),
                    },
                    size: e.size,
                })
                .collect();
            if !d.files.is_empty() {
                let key = |f: &LockedFile| (f.path.clone(), f.hash.clone(), f.link.clone());
                let want: BTreeSet<_> = d.files.iter().map(key).collect();
                let got: BTreeSet<_> = files.iter().map(key).collect();
                if want != got {
                    bail!(
                        "{}: the kept archive unpacks to other files than the lockfile lists",
                        d.id
                    );
                }
                files = d.files.clone();
            }
            d.files = files;
            d.size = size;
            unpacked.push(d.path.clone());
            packs.push(d);
        }
        let desired_paths: BTreeSet<&str> = packs.iter().map(|p| p.path.as_str()).collect();
        let removed = current
            .iter()
            .filter(|c| !desired_paths.contains(c.path.as_str()))
            .map(|c| c.path.clone())
            .collect();
        Ok(Staged {
            project: self,
            staging,
            packs,
            unpacked,
            removed,
        })
    }
}

/// A change ready to be committed.
pub struct Staged<'p> {
    project: &'p Project,
    staging: tempfile::TempDir,
    packs: Vec<LockedPack>,
    /// Paths unpacked into staging (new or replaced packs).
    unpacked: Vec<String>,
    /// Paths of current packs that are not wanted any more.
    removed: Vec<String>,
}

impl Staged<'_> {
    /// The desired packs, files filled in.
    pub fn packs(&self) -> &[LockedPack] {
        &self.packs
    }

    /// Moves the staged packs into place, records the transaction and writes
    /// the lockfile (`after`: its exact text; `None` removes it).
    pub fn commit(
        self,
        action: Action,
        before: Option<String>,
        after: Option<String>,
        undoes: Option<String>,
    ) -> Result<Transaction> {
        let root = &self.project.root;
        let parse = |t: &Option<String>| -> Result<Option<Lockfile>> {
            t.as_deref()
                .map(|t| Lockfile::parse(t, &root.join(LOCKFILE)))
                .transpose()
        };
        let time_ms = crate::packing::now_ms();
        let seq = self
            .project
            .transactions()?
            .last()
            .and_then(|t| t.transaction.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let tx = Transaction {
            transaction: format!("{seq:06}"),
            time: rfc3339(time_ms),
            time_ms,
            action,
            undoes,
            before: ids(parse(&before)?.as_ref()),
            after: ids(parse(&after)?.as_ref()),
            before_lock: before,
            after_lock: after.clone(),
        };
        let tx_path = root
            .join(STATE_DIR)
            .join("transactions")
            .join(format!("{}.json", tx.transaction));
        let old = self.staging.path().join("old");
        let mut moved: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
        let result = (|| -> Result<()> {
            let leaving: BTreeSet<&String> = self.removed.iter().chain(&self.unpacked).collect();
            for path in leaving {
                let at = root.join(path);
                if fs::symlink_metadata(&at).is_ok() {
                    let aside = old.join(path);
                    fs::create_dir_all(aside.parent().context("path")?)?;
                    fs::rename(&at, &aside).with_context(|| format!("moving {} aside", at.display()))?;
                    moved.push((at, Some(aside)));
                }
            }
            for path in &self.unpacked {
                let at = root.join(path);
                fs::create_dir_all(at.parent().context("path")?)?;
                fs::rename(self.staging.path().join("new").join(path), &at)
                    .with_context(|| format!("moving {} into place", at.display()))?;
                moved.push((at, None));
            }
            // Namespace directories an uninstall emptied go too.
            for path in &self.removed {
                if let Some(parent) = root.join(path).parent()
                    && parent != root.as_path()
                {
                    let _ = fs::remove_dir(parent);
                }
            }
            let dirs: BTreeSet<PathBuf> = self
                .removed
                .iter()
                .chain(&self.unpacked)
                .filter_map(|p| root.join(p).parent().map(Path::to_path_buf))
                .filter(|d| d.exists())
                .collect();
            for d in &dirs {
                sync_dir(d)?;
            }
            write_atomic(&tx_path, &serde_json::to_vec_pretty(&tx)?)?;
            match &after {
                Some(text) => write_atomic(&root.join(LOCKFILE), text.as_bytes())?,
                None => {
                    if root.join(LOCKFILE).exists() {
                        fs::remove_file(root.join(LOCKFILE))?;
                        sync_dir(root)?;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tx_path);
            for (at, aside) in moved.into_iter().rev() {
                match aside {
                    Some(a) => {
                        let _ = fs::rename(a, &at);
                    }
                    None => {
                        let _ = fs::remove_dir_all(&at);
                    }
                }
            }
            return Err(e.context("the change failed while moving packs into place; the target was restored"));
        }
        self.project.committed.set(true);
        Ok(tx)
    }
}

/// One difference between an installed tree and its lockfile.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub path: String,
    pub problem: String,
}

/// The outcome of `packfed verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub packs: usize,
    pub mismatches: Vec<Mismatch>,
}

pub(crate) fn hash_file(path: &Path) -> Result<ContentHash> {
    let mut f = fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn walk_files(root: &Path, prefix: &str, out: &mut BTreeSet<String>) -> Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk_files(&entry.path(), &rel, out)?;
        } else {
            out.insert(rel);
        }
    }
    Ok(())
}

/// Checks one installed pack's files against its lock entry.
pub fn verify_pack(target: &Path, p: &LockedPack) -> Result<Vec<Mismatch>> {
    let mut mismatches = Vec::new();
    let root = target.join(&p.path);
    let mut present = BTreeSet::new();
    if fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
        walk_files(&root, "", &mut present)?;
    } else {
        mismatches.push(Mismatch {
            path: p.path.clone(),
            problem: "pack directory is missing".into(),
        });
        return Ok(mismatches);
    }
    for f in &p.files {
        let shown = format!("{}/{}", p.path, f.path);
        let at = root.join(&f.path);
        present.remove(&f.path);
        let problem = match (&f.hash, &f.link) {
            (Some(h), _) => match fs::symlink_metadata(&at) {
                Err(_) => Some("missing".to_string()),
                Ok(m) if !m.is_file() => Some("is no longer a regular file".to_string()),
                Ok(_) => {
                    let actual = hash_file(&at)?;
                    (actual.to_hex() != *h).then(|| format!("modified (BLAKE3 {actual}, locked {h})"))
                }
            },
            (None, Some(t)) => match fs::read_link(&at) {
                Ok(actual) if actual.to_str() == Some(t.as_str()) => None,
                Ok(actual) => Some(format!("symlink now points to {}", actual.display())),
                Err(_) => Some("symlink missing".to_string()),
            },
            (None, None) => None,
        };
        if let Some(problem) = problem {
            mismatches.push(Mismatch { path: shown, problem });
        }
    }
    for extra in present {
        mismatches.push(Mismatch {
            path: format!("{}/{extra}", p.path),
            problem: "not in the lockfile (added after install)".into(),
        });
    }
    Ok(mismatches)
}

/// Checks every installed file against the lockfile.
pub fn verify(target: &Path) -> Result<Verification> {
    let lock = Lockfile::read(target)?.with_context(|| {
        format!(
            "{} has no {LOCKFILE}; install into it with `packfed install --to`",
            target.display()
        )
    })?;
    let mut mismatches = Vec::new();
    for p in &lock.packs {
        mismatches.extend(verify_pack(target, p)?);
    }
    Ok(Verification {
        ok: mismatches.is_empty(),
        packs: lock.packs.len(),
        mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_601_599_000), "2026-12-06T23:59:59Z");
    }
}
