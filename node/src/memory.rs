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
