//! The install scripts' detection logic (`scripts/lib/tools.sh`), run against prepared directory
//! trees: a machine without a tool must be seen as lacking it, or `install-deps.sh` installs
//! nothing and the build fails half an hour later (a Debian machine that ships only
//! `libclang-cpp.so.14` was taken for one with libclang, and bindgen then stopped with "Unable to
//! find libclang"). Each case builds a fake root and asks the same functions the scripts call.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `snippet` after sourcing tools.sh with every lookup under `root`; returns its stdout.
fn tools(root: &Path, snippet: &str) -> Result<String> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/tools.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}'; {snippet}", lib.display()))
        .env("TOOLS_ROOT", root)
        .env_remove("LIBCLANG_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LIBRARY_PATH")
        .output()
        .context("running bash")?;
    if !out.status.success() {
        bail!(
            "`{snippet}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn touch(root: &Path, file: &str) -> Result<()> {
    let path = root.join(file.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().context("file without a parent")?)?;
    std::fs::write(&path, b"")?;
    Ok(())
}

fn executable(root: &Path, file: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    touch(root, file)?;
    let path = root.join(file.trim_start_matches('/'));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn missing(root: &Path) -> Result<Vec<String>> {
    Ok(tools(root, "missing_packages")?
        .lines()
        .map(str::to_string)
        .collect())
}

#[test]
fn libclang_cpp_alone_is_not_libclang() -> Result<()> {
    let root = tempfile::tempdir()?;
    // What a fresh Debian 12 machine of this kind ships: the C++ API library, not libclang.
    touch(root.path(), "/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14")?;
    touch(root.path(), "/usr/lib/llvm-14/lib/libclang-cpp.so.14")?;
    assert_eq!(tools(root.path(), "find_libclang")?, "");
    assert!(missing(root.path())?.contains(&"libclang-dev".to_string()));
    Ok(())
}

#[test]
fn the_library_without_clangs_headers_is_not_enough() -> Result<()> {
    let root = tempfile::tempdir()?;
    // libclang1-14 alone: bindgen loads it, then fails on RocksDB's #include <stddef.h>.
    touch(root.path(), "/usr/lib/x86_64-linux-gnu/libclang-14.so.1")?;
    let found = tools(root.path(), "find_libclang")?;
    assert!(found.ends_with("libclang-14.so.1\n"), "found {found:?}");
    assert!(missing(root.path())?.contains(&"libclang-dev".to_string()));
    touch(
        root.path(),
        "/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h",
    )?;
    assert!(!missing(root.path())?.contains(&"libclang-dev".to_string()));
    Ok(())
}

#[test]
fn libclang_dev_layout_is_found_where_bindgen_looks() -> Result<()> {
    let root = tempfile::tempdir()?;
    touch(root.path(), "/usr/lib/llvm-14/lib/libclang-cpp.so.14")?;
    touch(root.path(), "/usr/lib/llvm-14/lib/libclang.so")?;
    touch(
        root.path(),
        "/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h",
    )?;
    let found = tools(root.path(), "find_libclang")?;
    assert!(
        found.ends_with("/usr/lib/llvm-14/lib/libclang.so\n"),
        "{found:?}"
    );
    assert!(!missing(root.path())?.contains(&"libclang-dev".to_string()));
    Ok(())
}

#[test]
fn libclang_path_overrides_the_search_like_bindgen() -> Result<()> {
    let root = tempfile::tempdir()?;
    touch(root.path(), "/opt/llvm/lib/libclang.so")?;
    let dir = root.path().join("opt/llvm/lib");
    let found = tools(
        root.path(),
        &format!("LIBCLANG_PATH='{}' find_libclang", dir.display()),
    )?;
    assert!(found.ends_with("/opt/llvm/lib/libclang.so\n"), "{found:?}");
    // Pointed at a directory without it, nothing else is searched: bindgen would fail too.
    touch(root.path(), "/usr/lib/llvm-14/lib/libclang.so")?;
    let empty = root.path().join("opt/empty");
    std::fs::create_dir_all(&empty)?;
    let found = tools(
        root.path(),
        &format!("LIBCLANG_PATH='{}' find_libclang", empty.display()),
    )?;
    assert_eq!(found, "");
    Ok(())
}

#[test]
fn a_bare_machine_lacks_everything_and_a_full_one_nothing() -> Result<()> {
    let root = tempfile::tempdir()?;
    assert_eq!(
        missing(root.path())?,
        [
            "postgresql",
            "postgresql-client",
            "libclang-dev",
            "chromium",
            "openssl"
        ]
    );
    // The PostgreSQL client alone (psql in /usr/bin) is not a server.
    executable(root.path(), "/usr/lib/postgresql/15/bin/psql")?;
    assert!(missing(root.path())?.contains(&"postgresql".to_string()));
    for program in ["initdb", "pg_ctl", "postgres", "pgbench", "pg_recvlogical"] {
        executable(
            root.path(),
            &format!("/usr/lib/postgresql/15/bin/{program}"),
        )?;
    }
    touch(root.path(), "/usr/lib/llvm-14/lib/libclang.so.1")?;
    touch(
        root.path(),
        "/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h",
    )?;
    executable(root.path(), "/usr/bin/chromium")?;
    executable(root.path(), "/usr/bin/openssl")?;
    assert_eq!(missing(root.path())?, Vec::<String>::new());
    let bindir = tools(root.path(), "find_pg_bindir")?;
    assert!(
        bindir.ends_with("/usr/lib/postgresql/15/bin\n"),
        "{bindir:?}"
    );
    Ok(())
}

#[test]
fn the_newest_postgresql_wins() -> Result<()> {
    let root = tempfile::tempdir()?;
    for version in ["9.6", "15", "16"] {
        for program in ["initdb", "pg_ctl", "postgres"] {
            executable(
                root.path(),
                &format!("/usr/lib/postgresql/{version}/bin/{program}"),
            )?;
        }
    }
    let bindir = tools(root.path(), "find_pg_bindir")?;
    assert!(
        bindir.ends_with("/usr/lib/postgresql/16/bin\n"),
        "{bindir:?}"
    );
    Ok(())
}
