//! The `deltamv` binary: parses the command line and hands over to [`deltamv::cli`].
//!
//! mimalloc replaces the system allocator: folding a batch allocates and frees many small
//! values (decoded rows, group records, keys), and glibc's malloc spent about a fifth of the
//! apply loop's time in a profile (bench/results), returning and re-faulting pages. Build with
//! `--no-default-features` for the system allocator (heap profilers interpose malloc).
//!
//! Freed memory goes back to the system at once, not after mimalloc's default delay (1 s, 10 s
//! for its arenas): with the views folded on several threads, pages freed in one thread's heap
//! waited there, and `run`'s peak RSS at 500k + 500k rows rose by 80-180 MB; purged at once it
//! is back to the one-thread figure, for about 5% of the catch-up rate (2026-12-05 steps file
//! in bench/results). `MIMALLOC_PURGE_DELAY` still overrides it.
//!
//! Transparent huge pages are off for the process. mimalloc asks for them on its arenas
//! (`madvise(MADV_HUGEPAGE)`), so with freed memory purged at once, a page touched again came
//! back as a fresh 2 MB page the kernel had to zero: that zeroing was 18% of `run`'s samples
//! while it drained a backlog. Without them, `run` used about 7.5% less CPU per change and
//! 95 MB less peak RSS at 500k + 500k rows (2026-12-06, steps file in bench/results).
//! `MIMALLOC_ALLOW_THP` set in the environment leaves the choice to mimalloc.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e` (mimalloc v3, which
/// libmimalloc-sys builds unless its `v2` feature is on); the test below checks it.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(feature = "mimalloc")]
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's options are plain values; setting one is not thread safe, and
        // this runs first in `main`, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, checked by the
/// kernel at every fault, so it also covers the arena mimalloc reserved before `main`).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; a
        // kernel without it returns an error, which leaves the default in place.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// At most one glibc malloc arena per core (glibc's default is eight per core). RocksDB is C++
/// and allocates through glibc's malloc whatever Rust's allocator is: its blocks, read on the
/// fold threads and on its own, landed in up to 16 arenas here, each keeping what was freed
/// in it. With one per core, `run`'s peak RSS while draining a backlog at 5M + 5M rows went
/// from 492 to 441-442 MB at the same rate (2026-12-07, steps file in bench/results).
/// `MALLOC_ARENA_MAX` in the environment still decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena_per_core() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes plain integers; this runs first in `main`, before any other
        // thread exists, and a value glibc refuses leaves its default in place.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    }
}

/// glibc's blocks of 256 kB and more are mapped on their own and unmapped when freed, always.
/// By default glibc raises that threshold to the size of every mapped block freed (up to
/// 32 MB), after which such blocks come from its heaps and stay there once freed. RocksDB's
/// memtables are made of 1 MB blocks (`min(1 MB, write_buffer_size / 8)`), a new set for
/// every checkpoint: at 5M + 5M rows glibc's heaps held about 190 MB while a backlog drained.
/// With the threshold fixed, `run`'s peak RSS there went from 489-525 to 452-472 MB
/// (2026-12-07, steps file in bench/results). `MALLOC_MMAP_THRESHOLD_` in the environment still decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn large_blocks_go_back_at_once() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt takes plain integers; this runs first in `main`, before any other
        // thread exists, and a value glibc refuses leaves its default in place.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        one_malloc_arena_per_core();
        large_blocks_go_back_at_once();
    }
    #[cfg(feature = "mimalloc")]
    purge_freed_memory_at_once();
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    no_transparent_huge_pages();
    deltamv::cli::main()
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod malloc_tests {
    use std::sync::{Arc, Barrier};

    /// How many arenas glibc's malloc has (`<heap nr=...>` elements of `malloc_info`).
    fn glibc_arenas() -> usize {
        malloc_info().matches("<heap nr=").count()
    }

    /// glibc's `malloc_info` as text.
    fn malloc_info() -> String {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: open_memstream writes the buffer's address and length into the two locals;
        // after fclose the buffer is a NUL-terminated string we own and free.
        unsafe {
            let f = libc::open_memstream(&mut buf, &mut len);
            assert!(!f.is_null(), "open_memstream failed");
            libc::malloc_info(0, f);
            libc::fclose(f);
            let xml = std::ffi::CStr::from_ptr(buf).to_string_lossy().into_owned();
            libc::free(buf.cast());
            xml
        }
    }

    /// Bytes in blocks glibc has mapped on their own (`<total type="mmap" ... size=...>`).
    fn glibc_mapped_bytes() -> usize {
        let xml = malloc_info();
        let total = xml
            .lines()
            .rev()
            .find(|l| l.contains("<total type=\"mmap\""))
            .expect("malloc_info has a total of mapped blocks");
        let size = total
            .split("size=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the total has a size");
        size.parse().expect("the size is a number")
    }

    #[test]
    fn glibc_maps_large_blocks_on_their_own_after_one_was_freed() {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            return; // the environment decides
        }
        super::large_blocks_go_back_at_once();
        const BLOCK: usize = 3 << 20;
        // SAFETY: plain allocations of BLOCK bytes, each freed once below.
        unsafe {
            // Freed, a mapped block of this size would raise glibc's own threshold above it.
            // black_box: a malloc whose block is never used may be optimized away.
            libc::free(std::hint::black_box(libc::malloc(BLOCK)));
            let before = glibc_mapped_bytes();
            let p = std::hint::black_box(libc::malloc(BLOCK));
            assert!(!p.is_null());
            let during = glibc_mapped_bytes();
            libc::free(p);
            assert!(
                during >= before + BLOCK,
                "a {BLOCK}-byte block after one was freed came from glibc's heap \
                 (mapped bytes {before} -> {during})"
            );
        }
    }

    #[test]
    fn glibc_malloc_keeps_to_one_arena_per_core() {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return; // the environment decides
        }
        let before = glibc_arenas();
        super::one_malloc_arena_per_core();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Four threads per core hold a glibc allocation at the same time, as RocksDB's do:
        // without the limit each would get an arena of its own.
        let threads = 4 * cores;
        let (hold, release) = (
            Arc::new(Barrier::new(threads + 1)),
            Arc::new(Barrier::new(threads + 1)),
        );
        let spawned: Vec<_> = (0..threads)
            .map(|_| {
                let (hold, release) = (hold.clone(), release.clone());
                std::thread::spawn(move || {
                    // SAFETY: a plain allocation, freed below by the thread that made it.
                    let p = unsafe { libc::malloc(4096) };
                    hold.wait();
                    release.wait();
                    unsafe { libc::free(p) };
                })
            })
            .collect();
        hold.wait();
        let during = glibc_arenas();
        release.wait();
        for t in spawned {
            t.join().expect("an allocating thread panicked");
        }
        assert!(
            during <= before.max(cores),
            "{during} glibc arenas with {threads} threads allocating ({before} before, {cores} cores)"
        );
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment decides the value read back
        }
        // SAFETY: reads an option's value; no test in this binary sets options.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(delay, 1000, "mimalloc v3's purge delay defaults to 1000 ms");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_for_the_process() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return; // the environment leaves the choice to mimalloc
        }
        super::no_transparent_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE only reads the process's flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1, "PR_SET_THP_DISABLE did not take effect");
    }
}
