#!/usr/bin/env bash
# Builds what ships: the release binary, stripped of its debug information, which is kept in a
# file of its own for symbolising crash reports (infra/split-debug.sh), and the server and agent
# images around the stripped binary. Prints each artefact's size.
# Usage: release.sh [DIR]   (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-dist}
cargo build --release --bin nullops
bash infra/split-debug.sh target/x86_64-unknown-linux-gnu/release/nullops "$dir"
bash infra/server-image.sh "$dir/nullops"
bash infra/agent-image.sh "$dir/nullops"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
version=$("$dir/nullops" --version | awk '{print $2}')
echo "built with the debug information apart:"
echo "  release build (line tables)  $(mib "$(stat -c %s target/x86_64-unknown-linux-gnu/release/nullops)")"
echo "  $dir/nullops (ships)         $(mib "$(stat -c %s "$dir/nullops")")"
echo "  $dir/nullops.debug           $(mib "$(stat -c %s "$dir/nullops.debug")")"
for image in server agent; do
  echo "  image nullops/$image:$version   $(mib "$(docker image inspect -f '{{.Size}}' "nullops/$image:$version")")"
done
