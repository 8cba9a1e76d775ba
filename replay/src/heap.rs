//! How the replay process asks glibc's allocator for memory.
//!
//! Replay allocates and frees buffers of megabytes to tens of megabytes for every batched
//! Jacobian pass (Burn's tensors, the factors, the dense Jbar of an order). glibc serves each
//! allocation above its mmap threshold (at most 32 MiB, adapted upward only as such blocks
//! are freed) from fresh pages of a new mapping and returns them on free, so every pass
//! faults its pages in again: on Burn's guide model (240 Adam steps, 2 points) 46.5 million
//! page faults and 101 s of a 195 s run in the kernel. Serving them from the heap, which
//! keeps freed memory for the next allocation, took it to 0.23 million faults and 130 s, for
//! 11 % more peak memory (measured 2026-12-04; README, Speed).

/// Makes glibc serve every allocation from the heap and keep up to 2 GiB of freed memory
/// for reuse, unless `GLIBC_TUNABLES` is set (then the user's tuning stands). Call it first
/// thing in `main`, before other threads allocate; it does nothing off glibc.
///
/// ```
/// epk_replay::heap::keep_freed_memory();
/// let v = vec![0.0f64; 1 << 23];
/// assert_eq!(v.len(), 1 << 23);
/// ```
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only sets the allocator's parameters; it is called before the
        // process starts other threads.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        }
    }
}
