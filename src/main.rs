//! The `relstat` binary: everything lives in the library; see `relstat::cli`.

/// mimalloc instead of glibc's malloc: ~25 % less CPU on replay and ~20 %
/// on `run --once` (malloc and free were ~30 % of `run --once`'s samples),
/// and, tuned below, ~2 MiB less idle memory (BENCHMARKS.md, issue 23,
/// step 6).
/// Transparent huge pages are off (the crate's `no_thp` feature): with them
/// an agent idle with 10,000 keys held twice its heap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3): 15. libmimalloc-sys
/// has no constant for it; check the enum when updating that crate.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Freed pages go back to the system at once instead of after 10 ms (and
    // 100 ms for whole arenas): by default a burst's pages were still resident
    // when the agent went idle (idle RSS 48 MiB instead of 37 with 10,000
    // keys). Read at every purge, so setting it here covers all of them.
    // SAFETY: mi_option_set only stores an option value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    relstat::cli::main()
}
