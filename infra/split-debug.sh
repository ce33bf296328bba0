#!/usr/bin/env bash
# Splits a nullops binary into what ships and what symbolises: DIR/nullops stripped of its debug
# information and symbols, and DIR/nullops.debug with both, named by the binary's
# .gnu_debuglink. Beside its debug file a binary's backtraces name functions, files and lines
# again (Rust's and gdb's both follow the link); without it, `RUST_BACKTRACE=full` prints the
# addresses, which `addr2line -f -C -e nullops.debug ADDRESS…` turns into the same.
# Usage: split-debug.sh BINARY DIR
set -euo pipefail
binary=$1 dir=$2
[ -x "$binary" ] || { echo "no binary at $binary" >&2; exit 1; }
mkdir -p "$dir"
rm -f "$dir/nullops" "$dir/nullops.debug"
objcopy --only-keep-debug "$binary" "$dir/nullops.debug"
# The link holds the file's name (gdb looks for it beside the binary) and its checksum.
objcopy --strip-all --add-gnu-debuglink="$dir/nullops.debug" "$binary" "$dir/nullops"
chmod 0755 "$dir/nullops"
# What ships must carry no debug information, and the debug file must hold the line tables.
# (.debug_gdb_scripts is loaded with the program: 34 bytes naming gdb's pretty-printers.)
if readelf -S "$dir/nullops" | grep -E '\.(debug_(info|line|str|abbrev|ranges)|symtab)' >/dev/null; then
  echo "$dir/nullops still carries debug information or symbols" >&2
  exit 1
fi
readelf -S "$dir/nullops" | grep -q '\.gnu_debuglink' || { echo "$dir/nullops does not name its debug file" >&2; exit 1; }
readelf -S "$dir/nullops.debug" | grep -q '\.debug_line' || { echo "$dir/nullops.debug holds no line tables" >&2; exit 1; }
readelf -S "$dir/nullops.debug" | grep -q '\.symtab' || { echo "$dir/nullops.debug holds no symbols" >&2; exit 1; }
"$dir/nullops" --version >/dev/null
