#!/usr/bin/env bash
# Builds the images there is to deploy, all FROM scratch, and pushes them to the local registry
# (infra/setup.sh): a demo service (static busybox httpd on :8080, logging each response; `/` names its version,
# `/healthz` answers ok) as nullops/demo:v1 and :v2, and the example plugins as
# nullops/http-check and nullops/render-config, and the example echo service as nullops/echo, tagged
# with the nullops version.
# Idempotent. Usage: demo-images.sh [BINARY]   (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/x86_64-unknown-linux-gnu/release/nullops}
registry=${NULLOPS_TEST_REGISTRY:-127.0.0.1:5050}
[ -x "$binary" ] || { echo "no binary at $binary: build it first (cargo build --release)" >&2; exit 1; }
version=$("$binary" --version | awk '{print $2}')
echo nullops | docker login "$registry" -u nullops --password-stdin >/dev/null 2>&1
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

build_and_push() { # NAME TAG DIR
  docker build -q -t "$registry/nullops/$1:$2" "$3" >/dev/null 2>&1 || docker build -t "$registry/nullops/$1:$2" "$3"
  docker push -q "$registry/nullops/$1:$2" >/dev/null
}

for v in v1 v2; do
  mkdir -p "$context/demo-$v/www"
  cp /bin/busybox "$context/demo-$v/busybox"
  echo "nullops demo $v" >"$context/demo-$v/www/index.html"
  echo ok >"$context/demo-$v/www/healthz"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nEXPOSE 8080\nENTRYPOINT ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]\n' >"$context/demo-$v/Dockerfile"
  build_and_push demo "$v" "$context/demo-$v"
done

mkdir -p "$context/plugin"
objcopy --strip-debug "$binary" "$context/plugin/nullops"
for plugin in http-check render-config; do
  printf 'FROM scratch\nCOPY nullops /nullops\nENTRYPOINT ["/nullops", "plugin", "%s"]\n' "$plugin" >"$context/plugin/Dockerfile"
  build_and_push "$plugin" "$version" "$context/plugin"
done
printf 'FROM scratch\nCOPY nullops /nullops\nEXPOSE 8080\nENTRYPOINT ["/nullops", "example", "echo"]\n' >"$context/plugin/Dockerfile"
build_and_push echo "$version" "$context/plugin"
echo "pushed $registry/nullops/demo:v1 :v2, http-check:$version, render-config:$version, echo:$version"
