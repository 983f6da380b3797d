//! The `deltamv` binary: parses the command line and hands over to [`deltamv::cli`].
//!
//! mimalloc replaces the system allocator: folding a batch allocates and frees many small
//! values (decoded rows, group records, keys), and glibc's malloc spent about a fifth of the
//! apply loop's time in a profile (bench/results), returning and re-faulting pages. Build with
//! `--no-default-features` for the system allocator (heap profilers interpose malloc).

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    deltamv::cli::main()
}
