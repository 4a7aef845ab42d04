//! The `packfed` binary. Everything lives in the library; this file only
//! picks the allocator.

// jemalloc instead of glibc's malloc. A fresh node's registry sync runs its
// ingest thread beside tantivy's indexing threads, all allocating hard;
// with glibc capped at two arenas (to keep RSS down, see
// `packfed_node::memory::limit_arenas`) they queued on the arena locks, and
// the sync of 50,000 releases took 7.9-11.3 s. jemalloc's thread caches
// keep them apart at the same two arenas: 6.0-6.3 s, for ~10 MB more RSS
// at 100,000 releases.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (the prefixed build reads `_rjem_malloc_conf`): two
/// arenas as with glibc; a background thread hands freed pages back to the
/// OS a second after they fell idle, which is what `malloc_trim` did after
/// bulk loads.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 70] = b"narenas:2,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    packfed_node::cli::main()
}
