//! The pack archive is a pure function of a tree's names, contents and owner
//! execute bits: creation order, mtimes, atimes and permission bits other than
//! the owner execute bit must not change a single byte. Unpacking gives back
//! exactly what was packed.

#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use packfed_protocol::ContentHash;
use packfed_protocol::archive::{self, EntryKind, PackSummary, ReadLimits};
use proptest::prelude::*;
use proptest::sample::Index;

/// One file of a generated tree.
#[derive(Debug, Clone)]
struct FileSpec {
    /// '/'-separated path relative to the tree root.
    path: String,
    contents: Vec<u8>,
    exec: bool,
}

/// How one copy of a tree is laid down on disk: everything here must be
/// invisible in the archive.
#[derive(Debug, Clone, Copy)]
struct Style {
    file_mode: u32,
    exec_mode: u32,
    dir_mode: u32,
}

const STYLE_A: Style = Style {
    file_mode: 0o600,
    exec_mode: 0o755,
    dir_mode: 0o700,
};

const STYLE_B: Style = Style {
    file_mode: 0o664,
    exec_mode: 0o744,
    dir_mode: 0o775,
};

/// 1-12 files, each under 0-3 nested directories, up to 4 KiB each. Directory
/// names start with 'd' and file names with 'f', so no path is both a file
/// and a directory.
fn tree() -> impl Strategy<Value = Vec<FileSpec>> {
    let file = (
        prop::collection::vec("[a-c]{1,2}", 0..=3),
        "[a-z0-9._-]{1,8}",
        prop::collection::vec(any::<u8>(), 0..=4096),
        any::<bool>(),
    );
    prop::collection::vec(file, 1..=12).prop_map(|raw| {
        let mut by_path = BTreeMap::new();
        for (dirs, name, contents, exec) in raw {
            let mut parts: Vec<String> = dirs.into_iter().map(|d| format!("d{d}")).collect();
            parts.push(format!("f{name}"));
            by_path.entry(parts.join("/")).or_insert((contents, exec));
        }
        by_path
            .into_iter()
            .map(|(path, (contents, exec))| FileSpec { path, contents, exec })
            .collect()
    })
}

/// Every directory of a tree (not the root), '/'-separated.
fn dirs_of(files: &[FileSpec]) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let mut parts: Vec<&str> = f.path.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            dirs.insert(parts[..i].join("/"));
        }
    }
    dirs
}

fn time(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn set_time(path: &Path, t: SystemTime) {
    // A read-only handle is enough for futimens as the owner, and works for
    // directories and for files without the owner write bit.
    let f = File::open(path).unwrap();
    f.set_times(FileTimes::new().set_modified(t).set_accessed(t)).unwrap();
}

/// Writes `files` under `root` in the given order, then gives every file and
/// directory the permissions of `style` and the mtimes of `times` (cycled).
fn write_tree(root: &Path, files: &[FileSpec], times: &[u64], style: Style) {
    for (i, f) in files.iter().enumerate() {
        let p = root.join(&f.path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &f.contents).unwrap();
        let mode = if f.exec { style.exec_mode } else { style.file_mode };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_time(&p, time(times[i % times.len()]));
    }
    // Deepest first, so setting a directory never touches its parent's mtime
    // after the parent was set (it would not anyway, but be safe).
    let mut dirs: Vec<String> = dirs_of(files).into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for (i, d) in dirs.iter().enumerate() {
        let p = root.join(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(style.dir_mode)).unwrap();
        set_time(&p, time(times[(i + 7) % times.len()].wrapping_mul(3) % 4_000_000_000));
    }
}

fn pack(root: &Path) -> (Vec<u8>, PackSummary) {
    archive::pack_dir(root, Vec::new()).unwrap()
}

fn mtimes(n: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..4_000_000_000, n.max(1))
}

/// A tree, two creation orders of it and two sets of mtimes.
fn tree_twice() -> impl Strategy<Value = (Vec<FileSpec>, Vec<FileSpec>, Vec<u64>, Vec<u64>)> {
    tree().prop_flat_map(|files| {
        let n = files.len();
        (
            Just(files.clone()).prop_shuffle(),
            Just(files).prop_shuffle(),
            mtimes(n),
            mtimes(n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn same_tree_packs_to_identical_bytes((order_a, order_b, times_a, times_b) in tree_twice()) {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_tree(a.path(), &order_a, &times_a, STYLE_A);
        write_tree(b.path(), &order_b, &times_b, STYLE_B);

        let (bytes_a, sum_a) = pack(a.path());
        let (bytes_b, sum_b) = pack(b.path());

        prop_assert!(bytes_a == bytes_b, "archives differ ({} vs {} bytes)", bytes_a.len(), bytes_b.len());
        prop_assert_eq!(sum_a, sum_b);
        prop_assert_eq!(sum_a.hash, ContentHash::of(&bytes_a));
        prop_assert_eq!(sum_b.hash, ContentHash::of(&bytes_b));
        prop_assert_eq!(sum_a.size, bytes_a.len() as u64);
        prop_assert_eq!(sum_a.entries, order_a.len() + dirs_of(&order_a).len());
    }

    #[test]
    fn changing_one_byte_changes_the_hash(
        files in tree(),
        which in any::<Index>(),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let nonempty: Vec<&FileSpec> = files.iter().filter(|f| !f.contents.is_empty()).collect();
        prop_assume!(!nonempty.is_empty());
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), &files, &[1_000_000], STYLE_A);
        let (before, sum_before) = pack(dir.path());

        let victim = which.get(&nonempty);
        let mut contents = victim.contents.clone();
        let i = at.index(contents.len());
        contents[i] ^= xor;
        let p = dir.path().join(&victim.path);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, &contents).unwrap();
        let mode = if victim.exec { STYLE_A.exec_mode } else { STYLE_A.file_mode };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_time(&p, time(1_000_000));

        let (after, sum_after) = pack(dir.path());
        prop_assert_ne!(sum_before.hash, sum_after.hash);
        prop_assert!(before != after);
        prop_assert_eq!(sum_after.hash, ContentHash::of(&after));
        prop_assert_eq!(sum_before.entries, sum_after.entries);
    }

    #[test]
    fn unpack_round_trips((files, _, times, _) in tree_twice()) {
        let src = tempfile::tempdir().unwrap();
        write_tree(src.path(), &files, &times, STYLE_B);
        let (bytes, summary) = pack(src.path());

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("unpacked");
        let entries = archive::unpack(&bytes[..], &dest, ReadLimits::default()).unwrap();
        prop_assert_eq!(entries.len(), summary.entries);

        // Entries come in byte order of their paths, each once.
        for w in entries.windows(2) {
            prop_assert!(w[0].path.as_bytes() < w[1].path.as_bytes(), "{:?} !< {:?}", w[0].path, w[1].path);
        }

        let dirs = dirs_of(&files);
        let by_path: BTreeMap<&str, _> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
        prop_assert_eq!(by_path.len(), files.len() + dirs.len());
        for d in &dirs {
            let e = by_path.get(d.as_str()).copied();
            prop_assert!(e.is_some(), "directory {} missing from entries", d);
            let e = e.unwrap();
            prop_assert_eq!(e.kind, EntryKind::Dir);
            prop_assert_eq!(e.hash, None);
            prop_assert!(dest.join(d).is_dir());
        }
        for f in &files {
            let e = by_path.get(f.path.as_str()).copied();
            prop_assert!(e.is_some(), "file {} missing from entries", &f.path);
            let e = e.unwrap();
            prop_assert_eq!(e.kind, EntryKind::File);
            prop_assert_eq!(e.size, f.contents.len() as u64);
            prop_assert_eq!(e.executable, f.exec);
            prop_assert_eq!(e.hash, Some(ContentHash::of(&f.contents)));

            let p = dest.join(&f.path);
            let on_disk = fs::read(&p).unwrap();
            prop_assert!(on_disk == f.contents, "{} differs after unpacking", &f.path);
            prop_assert_eq!(e.hash, Some(ContentHash::of(&on_disk)));
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            prop_assert_eq!(mode, if f.exec { 0o755 } else { 0o644 }, "mode of {}", &f.path);
        }

        // Inspecting sees exactly what unpacking wrote, without file hashes.
        let inspection = archive::inspect(&bytes[..], ReadLimits::default()).unwrap();
        let unhashed: Vec<_> = entries.iter().cloned().map(|e| archive::EntryInfo { hash: None, ..e }).collect();
        prop_assert_eq!(&inspection.entries, &unhashed);
        prop_assert_eq!(inspection.manifest_text, None);

        // And the unpacked tree packs back to the very same bytes.
        let (again, again_summary) = pack(&dest);
        prop_assert!(again == bytes, "repacking the unpacked tree changed the archive");
        prop_assert_eq!(again_summary, summary);
    }
}

fn simple_tree() -> Vec<FileSpec> {
    vec![
        FileSpec {
            path: "README.md".into(),
            contents: b"# hello\n".to_vec(),
            exec: false,
        },
        FileSpec {
            path: "bin/run.sh".into(),
            contents: b"#!/bin/sh\necho hi\n".to_vec(),
            exec: true,
        },
        FileSpec {
            path: "templates/a/b.tmpl".into(),
            contents: vec![0u8; 3000],
            exec: false,
        },
    ]
}

#[test]
fn owner_execute_bit_is_part_of_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let files = simple_tree();
    write_tree(dir.path(), &files, &[5], STYLE_A);
    let (_, before) = pack(dir.path());

    // Group and other execute bits do not count ...
    let readme = dir.path().join("README.md");
    fs::set_permissions(&readme, fs::Permissions::from_mode(0o611)).unwrap();
    let (_, group_exec) = pack(dir.path());
    assert_eq!(
        before.hash, group_exec.hash,
        "group/other execute bits must be normalized away"
    );

    // ... the owner's does.
    fs::set_permissions(&readme, fs::Permissions::from_mode(0o700)).unwrap();
    let (_, owner_exec) = pack(dir.path());
    assert_ne!(
        before.hash, owner_exec.hash,
        "owner execute bit must change the archive"
    );
}

#[test]
fn renaming_a_file_changes_the_hash() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let files = simple_tree();
    let mut renamed = files.clone();
    renamed[0].path = "README.txt".into();
    write_tree(a.path(), &files, &[5], STYLE_A);
    write_tree(b.path(), &renamed, &[5], STYLE_A);
    assert_ne!(pack(a.path()).1.hash, pack(b.path()).1.hash);
}

#[test]
fn empty_directory_is_part_of_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &simple_tree(), &[5], STYLE_A);
    let (_, before) = pack(dir.path());
    fs::create_dir(dir.path().join("empty")).unwrap();
    let (bytes, after) = pack(dir.path());
    assert_ne!(before.hash, after.hash);
    assert_eq!(after.entries, before.entries + 1);
    let entries = archive::inspect(&bytes[..], ReadLimits::default()).unwrap().entries;
    assert!(entries.iter().any(|e| e.path == "empty" && e.kind == EntryKind::Dir));
}

#[test]
fn git_dir_at_the_root_is_left_out() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_tree(a.path(), &simple_tree(), &[5], STYLE_A);
    write_tree(b.path(), &simple_tree(), &[9], STYLE_B);
    fs::create_dir_all(b.path().join(".git/objects")).unwrap();
    fs::write(b.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let (bytes_a, sum_a) = pack(a.path());
    let (bytes_b, sum_b) = pack(b.path());
    assert_eq!(bytes_a, bytes_b);
    assert_eq!(sum_a, sum_b);
    let entries = archive::inspect(&bytes_b[..], ReadLimits::default()).unwrap().entries;
    assert!(entries.iter().all(|e| !e.path.starts_with(".git")), "{entries:?}");
}

#[test]
fn in_tree_symlinks_are_packed_deterministically() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (root, times, style) in [(a.path(), [5], STYLE_A), (b.path(), [77_777], STYLE_B)] {
        write_tree(root, &simple_tree(), &times, style);
        std::os::unix::fs::symlink("../README.md", root.join("bin/readme")).unwrap();
    }
    let (bytes_a, sum_a) = pack(a.path());
    let (bytes_b, sum_b) = pack(b.path());
    assert_eq!(bytes_a, bytes_b);
    assert_eq!(sum_a.hash, ContentHash::of(&bytes_a));
    assert_eq!(sum_a, sum_b);

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("d");
    let entries = archive::unpack(&bytes_a[..], &dest, ReadLimits::default()).unwrap();
    let link = entries.iter().find(|e| e.path == "bin/readme").unwrap();
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(
        fs::read_link(dest.join("bin/readme")).unwrap(),
        Path::new("../README.md")
    );
    assert_eq!(fs::read(dest.join("bin/readme")).unwrap(), b"# hello\n");
}

/// The compression context is reused within a thread: after packing
/// something else (and larger), the same tree packs to the same bytes as
/// on a thread that never packed anything.
#[test]
fn a_reused_compression_context_packs_the_same_bytes_as_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &simple_tree(), &[5], STYLE_A);
    let root = dir.path().to_path_buf();
    let fresh = std::thread::spawn(move || pack(&root).0).join().unwrap();

    let other = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(other.path().join("big.bin"), &big).unwrap();
    for _ in 0..3 {
        pack(other.path());
        assert!(pack(dir.path()).0 == fresh, "a reused context changed the archive");
    }
    // And it is what a fresh zstd encoder at the fixed level makes of the tar.
    let tar = zstd::decode_all(&fresh[..]).unwrap();
    assert!(zstd::encode_all(&tar[..], packfed_protocol::archive::ZSTD_LEVEL).unwrap() == fresh);
}
