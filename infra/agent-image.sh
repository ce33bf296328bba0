#!/usr/bin/env bash
# Builds the agent image (infra/agent/Dockerfile, FROM scratch) around a static nullops binary and
# tags it nullops/agent:VERSION and nullops/agent:latest. Needs no base image, so no pull.
# Usage: agent-image.sh [BINARY]   (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/x86_64-unknown-linux-gnu/release/nullops}
[ -x "$binary" ] || { echo "no binary at $binary: build it first (cargo build --release)" >&2; exit 1; }
version=$("$binary" --version | awk '{print $2}')
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp infra/agent/Dockerfile "$context/"
# Debug information is most of a debug build's size and no use in the image.
objcopy --strip-debug "$binary" "$context/nullops"
docker build -q -t "nullops/agent:$version" -t nullops/agent:latest "$context" >/dev/null
echo "built nullops/agent:$version"
