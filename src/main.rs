//! The `relstat` binary: everything lives in the library; see `relstat::cli`.

fn main() -> std::process::ExitCode {
    tune_malloc();
    relstat::cli::main()
}

/// glibc's malloc raises its mmap threshold each time a large block is
/// freed (up to 32 MiB on 64-bit), after which the agent's large transient
/// allocations (a batch's history rows and key states, hash tables while
/// they grow) come from the heap, and their pages stay resident once freed.
/// Fixed thresholds (128 KiB, glibc's starting values) keep them in their
/// own mappings, handed back when freed: an agent idle with 10,000 keys
/// sits at ~32 MiB instead of ~43 (BENCHMARKS.md, issue 23).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; it is called first
    // thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
