//! Handing memory back to the operating system after bulk loads.
//!
//! glibc's allocator keeps pages freed in the middle of its heap mapped.
//! Loading the registry document at start allocates about four times its
//! size in temporaries, and the search catalog's first read walks every
//! release; without a trim a node with 100k releases stays at that startup
//! peak (~350 MB) for its whole life instead of its working set.

/// Returns freed heap pages to the OS. Cheap to call after a bulk load; a
/// no-op where the allocator is not glibc's.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has
    // no preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at two. By default every thread that
/// allocates gets an arena of its own (up to 8 per core): the search
/// indexer, sled's threads, tokio's workers and blocking threads each kept
/// a heap whose freed memory was cut into holes by the few long-lived
/// objects allocated among it (sled's cache pages, catalog strings), which
/// `malloc_trim` cannot return. Measured with 100k releases after 5,000
/// queries: about 300 MB RSS with the default, 277 MB with two arenas (237
/// MB with one). Two keeps allocation from contending on a single lock.
///
/// Measured against other allocators (alternating runs, 100k releases):
/// two arenas can put a fresh node's sync ingest on one arena with
/// tantivy's indexing threads, and it then queues on the arena lock (sync
/// of 50,000 releases 7.9-11.3 s). Four arenas: 7.3-7.6 s but ~25 MB more
/// RSS. jemalloc at two arenas: 6.0-6.3 s at the same RSS, but a 1 GiB
/// transfer fell from 358-386 to 266-307 MB/s. mimalloc: 278 MB and more.
/// None is a win on every row, so glibc at two stays.
/// Call before threads start; a no-op where the allocator is not glibc's,
/// and `MALLOC_ARENA_MAX` in the environment still wins.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before
        // other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Asks the kernel to start reading `len` bytes of `file` at `offset` into
/// the page cache, without waiting for them. The blob server reads leaves
/// on the async runtime; after [`drop_cached`] they are on disk, and a read
/// that waits for the disk there holds up every stream on that worker.
pub fn read_ahead(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: as in `drop_cached`; WILLNEED only queues reads.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Asks the kernel to drop `file`'s clean pages from the page cache. Call
/// after a sync, on bulk data written once and read rarely (a pack
/// arriving from peers): its pages go back to the free pool, and the next
/// writes reuse them instead of taking fresh memory. Measured on this VM,
/// where a page the guest has not touched lately costs several times a
/// recycled one: 15 files of 128 MiB written with a sync every 64 MiB took
/// 1.8-3.4 s of kernel time keeping their pages and 0.4-0.6 s dropping
/// them. Advice only: errors and other platforms are ignored.
pub fn drop_cached(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only reads the descriptor, which `file`
        // keeps open for the call; length 0 means to the end of the file.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}
