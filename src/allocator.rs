//! The binaries' global allocator. A training step frees and reallocates hundreds of MB of
//! activations; glibc hands them back to the OS and faults them in again, zeroed, every step
//! (`ssl-bench step`, ResNet-18 w16 b256 32px: 2.9-3.4 s/step with glibc, 2.2-2.4 s with
//! mimalloc; w32 b64: 1.42-1.67 s with mimalloc's defaults, 1.29-1.38 s without purging).
//! The library itself leaves the allocator to its user.

pub type Allocator = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (include/mimalloc.h); the Rust
/// bindings do not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process for reuse, unless the user set mimalloc's own
/// `MIMALLOC_PURGE_DELAY` (milliseconds): `MIMALLOC_PURGE_DELAY=250` gives memory back sooner,
/// ResNet-18 w64 b256 32 px peaking at 3.1 instead of 3.3-3.4 GiB, for steps ~20% slower.
/// Call first thing in `main`, before other threads start.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set is not thread safe; it runs before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
