//! The deterministic pack archive (tar inside zstd) and its safe unpacking.
//!
//! Determinism: entries are sorted by path (byte order), every header carries
//! mtime 0, uid/gid 0, no user or group names, and mode 0644 or 0755 (files
//! with an owner execute bit) and 0755 for directories; the zstd level is
//! fixed. So the same directory gives the same bytes, and the same BLAKE3, on
//! any machine whatever its mtimes, umask or directory order. `.git/` at the
//! pack root is left out.
//!
//! Safety: unpacking refuses absolute paths, `..`, hard links, device files
//! and fifos, symlinks that point outside the tree or that later entries would
//! pass through, duplicate entries, and archives that expand past the limits.
//! Everything streams: no file, and no archive, is ever held whole in memory.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::ids::ContentHash;
use crate::limits::*;

/// zstd level of every archive. Fixed: changing it changes every hash.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window we agree to decode (2^27 = 128 MiB of decoder memory).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}: file names must be valid UTF-8")]
    NonUtf8(String),
    #[error("{0}: special files (devices, fifos, sockets) cannot be packed")]
    Special(String),
    #[error("{path}: symlink to {target:?} points outside the pack")]
    LinkEscapes { path: String, target: String },
    #[error("unsafe path in archive: {0:?} (absolute, '..' or empty)")]
    UnsafePath(String),
    #[error("archive entry {0:?} passes through a symlink")]
    ThroughLink(String),
    #[error("archive entry {0:?} appears twice")]
    Duplicate(String),
    #[error("archive entry {path:?} is a {kind}, which packs may not contain")]
    ForbiddenEntry { path: String, kind: String },
    #[error("archive has more than {MAX_ARCHIVE_ENTRIES} entries")]
    TooManyEntries,
    #[error("archive path longer than {MAX_PATH_BYTES} bytes")]
    PathTooLong,
    #[error("archive expands past the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("archive is corrupt: {0}")]
    Corrupt(String),
}

fn io_err(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.as_ref().display().to_string();
    move |source| ArchiveError::Io { path, source }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        }
    }
    pub fn finish(self) -> (W, ContentHash, u64) {
        (self.inner, self.hasher.finalize().into(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One entry of a directory to pack.
enum Source {
    Dir,
    File { path: PathBuf, executable: bool },
    Link { target: String },
}

/// Walks `root`, returning (archive path, source) sorted by archive path.
fn collect(root: &Path) -> Result<Vec<(String, Source)>, ArchiveError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| ArchiveError::NonUtf8(entry.path().display().to_string()))?;
            if prefix.is_empty() && name == ".git" {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            if rel.len() > MAX_PATH_BYTES {
                return Err(ArchiveError::PathTooLong);
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push((path, rel.clone()));
                out.push((rel, Source::Dir));
            } else if ft.is_file() {
                out.push((
                    rel,
                    Source::File {
                        path,
                        executable: is_executable(&meta),
                    },
                ));
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(io_err(&path))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| ArchiveError::NonUtf8(rel.clone()))?
                    .to_string();
                if !link_stays_inside(&rel, &target) {
                    return Err(ArchiveError::LinkEscapes { path: rel, target });
                }
                out.push((rel, Source::Link { target }));
            } else {
                return Err(ArchiveError::Special(rel));
            }
            if out.len() > MAX_ARCHIVE_ENTRIES {
                return Err(ArchiveError::TooManyEntries);
            }
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // The same rule unpacking applies: no link target may walk through
    // another link (real resolution could then leave the tree).
    let links: HashSet<&str> = out
        .iter()
        .filter(|(_, s)| matches!(s, Source::Link { .. }))
        .map(|(p, _)| p.as_str())
        .collect();
    for (path, src) in &out {
        if let Source::Link { target } = src
            && link_traversal(path, target).iter().any(|t| links.contains(t.as_str()))
        {
            return Err(ArchiveError::LinkEscapes {
                path: path.clone(),
                target: target.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &fs::Metadata) -> bool {
    false
}

/// Whether a relative symlink at archive path `link` pointing to `target`
/// resolves inside the tree, judged lexically.
fn link_stays_inside(link: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    // Depth of the directory holding the link.
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// What packing produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackSummary {
    pub hash: ContentHash,
    pub size: u64,
    pub entries: usize,
}

/// Packs directory `root` into `out` deterministically.
pub fn pack_dir<W: Write>(root: &Path, out: W) -> Result<(W, PackSummary), ArchiveError> {
    with_compressor(|ctx| pack_with(root, out, ctx))
}

thread_local! {
    /// This thread's compression context, set to [`ZSTD_LEVEL`]: creating a
    /// context (and clearing its tables) for every archive was about a tenth
    /// of a small publish. Only the session is reset between archives, so
    /// the bytes are the same as from a fresh context.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { std::cell::RefCell::new(None) };
    /// This thread's decompression context, for the same reason: a publish
    /// reads its archive twice (the publisher's assessment and the node's),
    /// and creating the context was 5 % of it.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { std::cell::RefCell::new(None) };
}

/// A context holding more than this after use is dropped, not kept: a
/// decompression context keeps its window, which an archive may set up to
/// 2^[`ZSTD_WINDOW_LOG_MAX`] bytes, and every thread would keep that much.
const KEPT_CONTEXT_BYTES: usize = 8 * 1024 * 1024;

/// Runs `f` with this thread's context in `slot` (a fresh one from `fresh`
/// if it is in use further up this thread's stack).
fn with_context<C, T>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<C>>>,
    fresh: impl Fn() -> Result<C, ArchiveError>,
    size: impl Fn(&C) -> usize,
    f: impl FnOnce(&mut C) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    slot.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let mut ctx = match slot.take() {
                Some(ctx) => ctx,
                None => fresh()?,
            };
            let out = f(&mut ctx);
            if size(&ctx) <= KEPT_CONTEXT_BYTES {
                *slot = Some(ctx);
            }
            out
        }
        Err(_) => f(&mut fresh()?),
    })
}

fn zstd_err(code: usize) -> ArchiveError {
    ArchiveError::Io {
        path: String::new(),
        source: io::Error::other(zstd::zstd_safe::get_error_name(code)),
    }
}

/// Runs `f` with this thread's compression context.
fn with_compressor<T>(
    f: impl FnOnce(&mut zstd::zstd_safe::CCtx<'static>) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    let fresh = || {
        let mut ctx = zstd::zstd_safe::CCtx::try_create().ok_or_else(|| ArchiveError::Io {
            path: String::new(),
            source: io::Error::other("zstd could not allocate a compression context"),
        })?;
        ctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(ZSTD_LEVEL))
            .map_err(zstd_err)?;
        Ok(ctx)
    };
    with_context(&COMPRESSOR, fresh, |c| c.sizeof(), f)
}

/// Runs `f` with this thread's decompression context, its window capped at
/// 2^[`ZSTD_WINDOW_LOG_MAX`].
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::zstd_safe::DCtx<'static>) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    let fresh = || {
        let mut ctx = zstd::zstd_safe::DCtx::try_create().ok_or_else(|| ArchiveError::Io {
            path: String::new(),
            source: io::Error::other("zstd could not allocate a decompression context"),
        })?;
        ctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
            .map_err(zstd_err)?;
        Ok(ctx)
    };
    with_context(&DECOMPRESSOR, fresh, |c| c.sizeof(), f)
}

fn pack_with<W: Write>(
    root: &Path,
    out: W,
    ctx: &mut zstd::zstd_safe::CCtx<'static>,
) -> Result<(W, PackSummary), ArchiveError> {
    let entries = collect(root)?;
    let hashing = HashingWriter::new(out);
    let zst = zstd::Encoder::with_context(hashing, ctx);
    let mut tar = tar::Builder::new(zst);
    for (rel, src) in &entries {
        match src {
            Source::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, format!("{rel}/"), io::empty())
                    .map_err(io_err(rel))?;
            }
            Source::File { path, executable } => {
                let f = fs::File::open(path).map_err(io_err(path))?;
                let len = f.metadata().map_err(io_err(path))?.len();
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, mode, len);
                // take(len): a file growing while we pack cannot corrupt the stream.
                tar.append_data(&mut h, rel, f.take(len)).map_err(io_err(path))?;
            }
            Source::Link { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, rel, target).map_err(io_err(rel))?;
            }
        }
    }
    let zst = tar.into_inner().map_err(io_err(root))?;
    let hashing = zst.finish().map_err(io_err(root))?;
    let (out, hash, size) = hashing.finish();
    Ok((
        out,
        PackSummary {
            hash,
            size,
            entries: entries.len(),
        },
    ))
}

/// The kind of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// An entry seen while inspecting or unpacking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Relative path, '/'-separated, no trailing slash.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// BLAKE3 of a file's content, from [`unpack`] (None for directories
    /// and links, and from [`inspect`], which has no use for it: hashing
    /// every file twice per publish was most of a large publish's hashing).
    pub hash: Option<ContentHash>,
    pub executable: bool,
}

/// Limits for reading an archive.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_unpacked_bytes: u64,
    pub max_entries: usize,
}

impl ReadLimits {
    /// Limits for an archive of `archive_bytes`: expansion is capped at
    /// [`MAX_EXPANSION_RATIO`] times the archive (but never below
    /// [`RATIO_FLOOR_BYTES`]) and at [`MAX_UNPACKED_BYTES`].
    pub fn for_archive(archive_bytes: u64) -> Self {
        let by_ratio = archive_bytes.saturating_mul(MAX_EXPANSION_RATIO).max(RATIO_FLOOR_BYTES);
        Self {
            max_unpacked_bytes: by_ratio.min(MAX_UNPACKED_BYTES),
            max_entries: MAX_ARCHIVE_ENTRIES,
        }
    }
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: MAX_UNPACKED_BYTES,
            max_entries: MAX_ARCHIVE_ENTRIES,
        }
    }
}

/// Checks an archive path and returns it normalized ('/'-separated, no
/// trailing slash).
fn safe_path(raw: &[u8]) -> Result<String, ArchiveError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(ArchiveError::PathTooLong);
    }
    let s = std::str::from_utf8(raw).map_err(|_| ArchiveError::NonUtf8(String::from_utf8_lossy(raw).into()))?;
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() || s.contains('\\') || s.contains('\0') {
        return Err(ArchiveError::UnsafePath(s.to_string()));
    }
    let mut parts = Vec::new();
    for c in Path::new(trimmed).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::CurDir => {}
            _ => return Err(ArchiveError::UnsafePath(s.to_string())),
        }
    }
    if parts.is_empty() {
        return Err(ArchiveError::UnsafePath(s.to_string()));
    }
    Ok(parts.join("/"))
}

/// Whether [`walk`] hashes each file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileHashes {
    Compute,
    Skip,
}

/// Walks an archive, calling `visit` with each checked entry and a reader of
/// its content, enforcing path rules, entry kinds and size limits. Returns the
/// entries, with the hashes of their files if `hashes` asks for them.
fn walk<R: Read>(
    archive: R,
    limits: ReadLimits,
    hashes: FileHashes,
    mut visit: impl FnMut(&EntryInfo, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Vec<EntryInfo>, ArchiveError> {
    with_decompressor(|ctx| {
        let dec = zstd::Decoder::with_context(io::BufReader::with_capacity(DECODE_BUFFER_BYTES, archive), ctx);
        walk_tar(dec, limits, hashes, &mut visit)
    })
}

/// Input buffered ahead of the decompressor.
const DECODE_BUFFER_BYTES: usize = 64 * 1024;

/// [`walk`] over the decompressed tar stream.
fn walk_tar(
    dec: impl Read,
    limits: ReadLimits,
    hashes: FileHashes,
    visit: &mut impl FnMut(&EntryInfo, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Vec<EntryInfo>, ArchiveError> {
    let mut entries = Vec::new();
    let stream_limit = limits.max_unpacked_bytes.saturating_add(TAR_OVERHEAD_BYTES);
    let mut tar = tar::Archive::new(CappedReader {
        inner: dec,
        remaining: stream_limit,
        limit: stream_limit,
    });
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut seen = HashSet::new();
    let corrupt = |e: io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<StreamTooLarge>()) {
        Some(t) => ArchiveError::TooLarge { limit: t.0 },
        None => ArchiveError::Corrupt(e.to_string()),
    };
    // Symlink paths, every directory some entry sits in, and the paths each
    // link's target passes through: checked together at the end, so links
    // can neither be walked through nor chained out of the tree, whatever
    // the entry order.
    let mut links: HashSet<String> = HashSet::new();
    let mut parents: HashSet<String> = HashSet::new();
    let mut traversed: Vec<(String, String)> = Vec::new();
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries);
        }
        let path = safe_path(&entry.path_bytes())?;
        if !seen.insert(path.clone()) {
            return Err(ArchiveError::Duplicate(path));
        }
        for (i, _) in path.match_indices('/') {
            if links.contains(&path[..i]) {
                return Err(ArchiveError::ThroughLink(path));
            }
            parents.insert(path[..i].to_string());
        }
        let header = entry.header();
        let mode = header.mode().map_err(corrupt)?;
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            other => {
                return Err(ArchiveError::ForbiddenEntry {
                    path,
                    kind: format!("{other:?}").to_lowercase(),
                });
            }
        };
        let size = if kind == EntryKind::File { entry.size() } else { 0 };
        total = total.saturating_add(size);
        if total > limits.max_unpacked_bytes {
            return Err(ArchiveError::TooLarge {
                limit: limits.max_unpacked_bytes,
            });
        }
        let mut info = EntryInfo {
            path,
            kind,
            size,
            hash: None,
            executable: kind == EntryKind::File && mode & 0o100 != 0,
        };
        if kind == EntryKind::Symlink {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ArchiveError::Corrupt(format!("{}: symlink without target", info.path)))?;
            let target = std::str::from_utf8(&target)
                .map_err(|_| ArchiveError::NonUtf8(info.path.clone()))?
                .to_string();
            if !link_stays_inside(&info.path, &target) {
                return Err(ArchiveError::LinkEscapes {
                    path: info.path,
                    target,
                });
            }
            if parents.contains(&info.path) {
                return Err(ArchiveError::ThroughLink(info.path));
            }
            links.insert(info.path.clone());
            for through in link_traversal(&info.path, &target) {
                traversed.push((info.path.clone(), through));
            }
            let mut target_reader = io::Cursor::new(target.into_bytes());
            visit(&info, &mut target_reader)?;
            entries.push(info);
            continue;
        }
        let mut content = (&mut entry).take(size);
        if hashes == FileHashes::Skip {
            // Unread content is skipped by the tar reader (still decompressed,
            // still inside the stream cap).
            visit(&info, &mut content)?;
            entries.push(info);
            continue;
        }
        let mut hashing = HashingReader {
            inner: content,
            hasher: blake3::Hasher::new(),
        };
        visit(&info, &mut hashing)?;
        // Drain what the visitor did not read so the hash covers the whole file.
        io::copy(&mut hashing, &mut io::sink()).map_err(corrupt)?;
        if kind == EntryKind::File {
            info.hash = Some(hashing.hasher.finalize().into());
        }
        entries.push(info);
    }
    if let Some((path, _)) = traversed.iter().find(|(_, through)| links.contains(through)) {
        return Err(ArchiveError::ThroughLink(path.clone()));
    }
    Ok(entries)
}

/// The in-tree paths a link's target walks through before its last
/// component (lexically). If one of them is itself a link, the real
/// resolution can differ from the lexical one and leave the tree.
fn link_traversal(link: &str, target: &str) -> Vec<String> {
    let mut cur: Vec<&str> = link.split('/').collect();
    cur.pop();
    let parts: Vec<&str> = target.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." {
            cur.pop();
        } else {
            cur.push(part);
        }
        if i + 1 < parts.len() && !cur.is_empty() {
            out.push(cur.join("/"));
        }
    }
    out
}

/// Marks the decompressed stream passing its cap.
#[derive(Debug)]
struct StreamTooLarge(u64);

impl std::fmt::Display for StreamTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "archive expands past {} bytes", self.0)
    }
}

impl std::error::Error for StreamTooLarge {}

/// Fails once more than `limit` bytes have been read.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // One probe byte tells "exactly at the cap" from "past it".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(StreamTooLarge(self.limit))),
            };
        }
        let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What an archive holds, read without unpacking: the manifest text and the
/// entries (without file hashes). Anyone can recompute quality from this.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub manifest_text: Option<String>,
    pub entries: Vec<EntryInfo>,
}

/// Lists an archive and reads its `pack.toml`, within `limits`.
pub fn inspect<R: Read>(archive: R, limits: ReadLimits) -> Result<Inspection, ArchiveError> {
    let mut manifest_text = None;
    let entries = walk(archive, limits, FileHashes::Skip, |info, content| {
        if info.kind == EntryKind::File && info.path == crate::manifest::MANIFEST_FILE {
            if info.size > MAX_MANIFEST_BYTES {
                return Err(ArchiveError::TooLarge {
                    limit: MAX_MANIFEST_BYTES,
                });
            }
            let mut s = String::new();
            content
                .read_to_string(&mut s)
                .map_err(|e| ArchiveError::Corrupt(format!("pack.toml: {e}")))?;
            manifest_text = Some(s);
        }
        Ok(())
    })?;
    Ok(Inspection { manifest_text, entries })
}

/// Reads the files `wanted` picks by path (at most `max_each` bytes each,
/// larger ones skipped), within `limits`, without unpacking.
pub fn read_files<R: Read>(
    archive: R,
    limits: ReadLimits,
    wanted: impl Fn(&str) -> bool,
    max_each: u64,
) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let mut out = Vec::new();
    walk(archive, limits, FileHashes::Skip, |info, content| {
        if info.kind == EntryKind::File && info.size <= max_each && wanted(&info.path) {
            let mut bytes = Vec::with_capacity(info.size as usize);
            content
                .read_to_end(&mut bytes)
                .map_err(|e| ArchiveError::Corrupt(format!("{}: {e}", info.path)))?;
            out.push((info.path.clone(), bytes));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Unpacks an archive into `dest`, which must be an empty or new directory
/// (the caller stages and renames). Returns the entries with file hashes.
pub fn unpack<R: Read>(archive: R, dest: &Path, limits: ReadLimits) -> Result<Vec<EntryInfo>, ArchiveError> {
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    // Links are created only after the whole archive passed every check, so a
    // refused archive never leaves a link behind.
    let mut links = Vec::new();
    let entries = walk(archive, limits, FileHashes::Compute, |info, content| {
        let target = dest.join(&info.path);
        refuse_links_on_the_way(dest, &info.path)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        match info.kind {
            EntryKind::Dir => fs::create_dir_all(&target).map_err(io_err(&target))?,
            EntryKind::File => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io_err(&target))?;
                io::copy(content, &mut f).map_err(io_err(&target))?;
                set_mode(&f, if info.executable { 0o755 } else { 0o644 }).map_err(io_err(&target))?;
            }
            EntryKind::Symlink => {
                let mut t = String::new();
                content.read_to_string(&mut t).map_err(io_err(&target))?;
                links.push((t, target));
            }
        }
        Ok(())
    })?;
    for (t, at) in links {
        make_symlink(&t, &at).map_err(io_err(&at))?;
    }
    Ok(entries)
}

/// Refuses an entry if any directory on its way inside `dest` is a symlink:
/// otherwise a link to an in-tree directory followed by `link/../..` tricks
/// could write elsewhere.
fn refuse_links_on_the_way(dest: &Path, rel: &str) -> Result<(), ArchiveError> {
    let mut cur = dest.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Err(ArchiveError::ThroughLink(rel.to_string())),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(f: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &fs::File, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn make_symlink(target: &str, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn make_symlink(_: &str, at: &Path) -> io::Result<()> {
    Err(io::Error::other(format!(
        "{}: symlinks are not supported here",
        at.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rule() {
        assert!(link_stays_inside("a/b", "c"));
        assert!(link_stays_inside("a/b", "../c"));
        assert!(!link_stays_inside("a/b", "../../c"));
        assert!(!link_stays_inside("a", "/etc/passwd"));
        assert!(!link_stays_inside("a", ".."));
    }

    /// A tar stream of one file, compressed with a window of 2^`window_log`.
    fn archive_with_window(window_log: u32, content: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64);
        tar.append_data(&mut h, "f.txt", content).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut enc = zstd::Encoder::new(Vec::new(), 1).unwrap();
        enc.window_log(window_log).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.include_contentsize(false).unwrap();
        io::Write::write_all(&mut enc, &tar).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn the_reused_decompressor_keeps_its_window_cap_and_recovers_after_bad_input() {
        let limits = ReadLimits {
            max_unpacked_bytes: 1 << 20,
            max_entries: 10,
        };
        let good = archive_with_window(20, b"hello");
        let over = archive_with_window(ZSTD_WINDOW_LOG_MAX + 1, b"hello");
        for _ in 0..2 {
            // Positive control first: the same content under a small window.
            assert_eq!(inspect(&good[..], limits).unwrap().entries.len(), 1);
            // At the cap: read (the context, grown past what a thread keeps,
            // is dropped afterwards).
            let at_cap = archive_with_window(ZSTD_WINDOW_LOG_MAX, b"hello");
            assert_eq!(inspect(&at_cap[..], limits).unwrap().entries.len(), 1);
            // Over the cap: refused, on a fresh context and on the kept one.
            assert!(matches!(inspect(&over[..], limits), Err(ArchiveError::Corrupt(_))));
            // Cut mid-frame: refused, and the next archive still reads.
            assert!(inspect(&good[..good.len() / 2], limits).is_err());
            assert_eq!(inspect(&good[..], limits).unwrap().entries.len(), 1);
        }
    }

    #[test]
    fn path_rule() {
        assert_eq!(safe_path(b"a/b/").unwrap(), "a/b");
        assert_eq!(safe_path(b"./a").unwrap(), "a");
        for bad in [&b"/etc/passwd"[..], b"../x", b"a/../../x", b"", b"a\\..\\x"] {
            assert!(safe_path(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
