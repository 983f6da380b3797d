# Detection of the tools deltamv's build and tests need, shared by install-deps.sh (what to
# install), check-tools.sh (CI's proof that each is found) and tests/install_detection.rs (the
# logic itself, run against prepared directory trees). Source it; every function looks under
# "${TOOLS_ROOT:-}" so a test can point it at a fake filesystem.
#
# libclang is found the way bindgen's clang-sys 1.x finds it at build time: LIBCLANG_PATH (a file
# or a directory) when set, else `llvm-config --prefix`'s lib directories, LD_LIBRARY_PATH,
# LIBRARY_PATH and the fixed Linux globs, for files named libclang.so, libclang-*.so,
# libclang.so.* or libclang-*.so.*, never a name containing "-cpp." (libclang-cpp.so.14 is the
# C++ API library Debian machines often ship; bindgen cannot load it). bindgen also needs clang's
# own headers (stddef.h in the resource directory), which come with libclang-dev, not with the
# bare runtime library, so both must be there.

_tools_root() { printf '%s' "${TOOLS_ROOT:-}"; }

# Prints the libclang files in directory $1 that clang-sys would accept.
_libclang_in_dir() {
  local dir=$1 f name
  [ -d "$dir" ] || return 0
  for f in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
    [ -e "$f" ] || continue
    name=${f##*/}
    case "$name" in *-cpp.*) continue ;; esac
    printf '%s\n' "$f"
  done
}

# Prints the first libclang bindgen would load, or nothing.
find_libclang() {
  local root dir found="" prefix
  root=$(_tools_root)
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    if [ -f "$LIBCLANG_PATH" ]; then
      found=$(_libclang_in_dir "$(dirname "$LIBCLANG_PATH")" | grep -Fx "$LIBCLANG_PATH" || true)
    else
      found=$(_libclang_in_dir "$LIBCLANG_PATH")
    fi
    [ -n "$found" ] && printf '%s\n' "$found" | head -n 1
    return 0
  fi
  local dirs=()
  if [ -z "$root" ] && command -v llvm-config >/dev/null 2>&1; then
    prefix=$(llvm-config --prefix 2>/dev/null || true)
    [ -n "$prefix" ] && dirs+=("$prefix/bin" "$prefix/lib" "$prefix/lib64")
  fi
  local IFS_OLD=$IFS
  IFS=:
  for dir in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do [ -n "$dir" ] && dirs+=("$root$dir"); done
  IFS=$IFS_OLD
  local pattern
  for pattern in "/usr/local/llvm*/lib*" "/usr/local/lib*/*/*" "/usr/local/lib*/*" "/usr/local/lib*" \
    "/usr/lib*/*/*" "/usr/lib*/*" "/usr/lib*"; do
    for dir in $root$pattern; do [ -d "$dir" ] && dirs+=("$dir"); done
  done
  for dir in "${dirs[@]}"; do
    found=$(_libclang_in_dir "$dir" | head -n 1)
    if [ -n "$found" ]; then
      printf '%s\n' "$found"
      return 0
    fi
  done
}

# Prints clang's resource header stddef.h (needed by bindgen to parse RocksDB's C header), or nothing.
find_clang_headers() {
  local root f
  root=$(_tools_root)
  for f in "$root"/usr/lib/llvm-*/lib/clang/*/include/stddef.h "$root"/usr/lib/clang/*/include/stddef.h \
    "$root"/usr/local/lib/clang/*/include/stddef.h "$root"/usr/local/llvm*/lib/clang/*/include/stddef.h; do
    if [ -f "$f" ]; then
      printf '%s\n' "$f"
      return 0
    fi
  done
}

have_libclang() { [ -n "$(find_libclang)" ] && [ -n "$(find_clang_headers)" ]; }

# Prints the PostgreSQL server bindir (initdb, pg_ctl, postgres), as tests/support finds it:
# `pg_config --bindir` when it has the server programs, else the newest /usr/lib/postgresql/*/bin.
find_pg_bindir() {
  local root dir bindir
  root=$(_tools_root)
  if [ -z "$root" ] && command -v pg_config >/dev/null 2>&1; then
    bindir=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && [ -x "$bindir/postgres" ]; then
      printf '%s\n' "$bindir"
      return 0
    fi
  fi
  for dir in $(ls -d "$root"/usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
}

# The PostgreSQL client programs the tests and benchmarks run (psql, pgbench, pg_recvlogical).
have_pg_clients() {
  local bindir p
  bindir=$(find_pg_bindir)
  for p in psql pgbench pg_recvlogical; do
    [ -n "$bindir" ] && [ -x "$bindir/$p" ] && continue
    [ -z "$(_tools_root)" ] && command -v "$p" >/dev/null 2>&1 && continue
    return 1
  done
}

# The browser for the dashboard's headless test, as tests/dashboard finds it.
find_chromium() {
  local root p
  root=$(_tools_root)
  for p in chromium chromium-browser; do
    if [ -n "$root" ]; then
      [ -x "$root/usr/bin/$p" ] && { printf '%s\n' "$root/usr/bin/$p"; return 0; }
    elif command -v "$p" >/dev/null 2>&1; then
      command -v "$p"
      return 0
    fi
  done
}

have_openssl() {
  local root
  root=$(_tools_root)
  if [ -n "$root" ]; then [ -x "$root/usr/bin/openssl" ]; else command -v openssl >/dev/null 2>&1; fi
}

# The Debian packages for what is missing, one per line.
missing_packages() {
  [ -n "$(find_pg_bindir)" ] || echo postgresql
  have_pg_clients || echo postgresql-client
  have_libclang || echo libclang-dev
  [ -n "$(find_chromium)" ] || echo chromium
  have_openssl || echo openssl
}

# Says so before a build when RocksDB has not been compiled in this target directory yet: the
# first build compiles it from C++ sources, about 30 minutes on 2 cores, with little output.
announce_cold_build() {
  local target=${CARGO_TARGET_DIR:-target}
  if ! ls "$target"/*/build/librocksdb-sys-*/out/librocksdb.a >/dev/null 2>&1; then
    echo "note: first build in $target - RocksDB is compiled from C++ sources, about 30 minutes on 2 cores" >&2
    echo "      (later builds reuse it; set CARGO_TARGET_DIR to share it between clones)" >&2
  fi
}
