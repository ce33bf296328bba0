#!/usr/bin/env bash
# Builds image nullops/NAME from infra/NAME/Dockerfile (FROM scratch) around a static nullops
# binary, with the system's CA roots beside it for the Dockerfile to take, and tags it
# nullops/NAME:VERSION and nullops/NAME:latest. Needs no base image, so no pull.
# Usage: image.sh NAME [BINARY]   (NAME: agent or server; default binary: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
binary=${2:-target/x86_64-unknown-linux-gnu/release/nullops}
[ -f "infra/$name/Dockerfile" ] || { echo "no infra/$name/Dockerfile" >&2; exit 1; }
[ -x "$binary" ] || { echo "no binary at $binary: build it first (cargo build --release)" >&2; exit 1; }
version=$("$binary" --version | awk '{print $2}')
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "infra/$name/Dockerfile" "$context/"
cp /etc/ssl/certs/ca-certificates.crt "$context/"
# Debug information is most of a debug build's size and no use in the image.
objcopy --strip-debug "$binary" "$context/nullops"
docker build -q -t "nullops/$name:$version" -t "nullops/$name:latest" "$context" >/dev/null
echo "built nullops/$name:$version"
