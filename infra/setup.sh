#!/usr/bin/env bash
# Installs and starts what NullOps and its tests need on a fresh Debian 12 machine:
# PostgreSQL 15, NATS with JetStream, a Docker registry, Chromium, docker-compose (the deploy
# benchmark's baseline), nginx and wrk (the ingress benchmark's baseline and load), Prometheus (the metrics tests scrape
# with it), stress-ng (the API suite run again with both cores busy), iproute2 and util-linux (ip netns
# and nsenter: the browser tests' own network namespace), static busybox (for test images) and the Python test clients;
# checks that the machine's Docker Engine answers.
# Idempotent: every step checks before it acts, so running it twice is harmless.
set -euo pipefail

STATE_DIR=${NULLOPS_INFRA_DIR:-/var/lib/nullops-infra}
PG_USER=${NULLOPS_PG_USER:-nullops}
PG_PASSWORD=${NULLOPS_PG_PASSWORD:-nullops}
NATS_PORT=${NULLOPS_NATS_PORT:-4222}
REGISTRY_PORT=${NULLOPS_REGISTRY_PORT:-5050}
mkdir -p "$STATE_DIR"

log() { printf '[infra] %s\n' "$*"; }

need_pkgs=()
for pkg in postgresql nats-server docker-registry apache2-utils python3-venv chromium busybox-static binutils docker-compose nginx wrk lld openssl ca-certificates prometheus stress-ng iproute2 util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  # The package starts a default nginx on port 80; the benchmark runs its own.
  if [ -s /run/nginx.pid ]; then nginx -s quit 2>/dev/null || true; fi
  # Likewise Prometheus (and its node exporter): the tests start their own.
  if command -v service >/dev/null; then service prometheus stop >/dev/null 2>&1 || true; service prometheus-node-exporter stop >/dev/null 2>&1 || true; fi
fi

# PostgreSQL: the Debian cluster runs as user postgres; there is no systemd here.
if ! pg_lsclusters -h 2>/dev/null | grep -q ' online '; then
  log "starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect 15 main start
fi
for _ in $(seq 1 50); do
  runuser -u postgres -- pg_isready -q -h 127.0.0.1 && break
  sleep 0.2
done
# The suites run tests side by side, several with two production servers, each server with its
# own pools: Debian's 100 connections are too few for that.
PG_MAX_CONNECTIONS=400
if [ "$(runuser -u postgres -- psql -tAc 'SHOW max_connections')" -lt "$PG_MAX_CONNECTIONS" ]; then
  log "raising postgresql max_connections to $PG_MAX_CONNECTIONS"
  runuser -u postgres -- psql -qc "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS"
  pg_ctlcluster --skip-systemctl-redirect 15 main restart
  for _ in $(seq 1 50); do
    runuser -u postgres -- pg_isready -q -h 127.0.0.1 && break
    sleep 0.2
  done
fi
if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'" | grep -q 1; then
  log "creating role $PG_USER"
  runuser -u postgres -- psql -qc "CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD'"
fi
if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname='nullops'" | grep -q 1; then
  runuser -u postgres -- psql -qc "CREATE DATABASE nullops OWNER $PG_USER"
fi

# NATS with JetStream.
if ! (exec 3<>/dev/tcp/127.0.0.1/"$NATS_PORT") 2>/dev/null; then
  log "starting nats-server on $NATS_PORT"
  mkdir -p "$STATE_DIR/nats"
  nohup nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STATE_DIR/nats" \
    >"$STATE_DIR/nats.log" 2>&1 &
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$NATS_PORT") 2>/dev/null && break
    sleep 0.1
  done
fi

# A private Docker registry with htpasswd auth (user nullops).
if ! (exec 3<>/dev/tcp/127.0.0.1/"$REGISTRY_PORT") 2>/dev/null; then
  log "starting docker-registry on $REGISTRY_PORT"
  mkdir -p "$STATE_DIR/registry"
  [ -f "$STATE_DIR/registry/htpasswd" ] ||
    htpasswd -Bbc "$STATE_DIR/registry/htpasswd" nullops nullops 2>/dev/null
  cat >"$STATE_DIR/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
auth:
  htpasswd:
    realm: nullops-registry
    path: $STATE_DIR/registry/htpasswd
YML
  nohup docker-registry serve "$STATE_DIR/registry/config.yml" >"$STATE_DIR/registry.log" 2>&1 &
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$REGISTRY_PORT") 2>/dev/null && break
    sleep 0.1
  done
fi

# The tests push images to that registry with the machine's Docker Engine (tests/fixtures).
if ! docker info >/dev/null 2>&1; then
  log "Docker Engine is not reachable: the registry and agent tests need it (docker info failed)"
  exit 1
fi

# Python clients for the third-party GraphQL client tests, in a venv of our own.
# Playwright drives Debian's Chromium (no browser download: the tests name /usr/bin/chromium);
# standardwebhooks verifies webhook signatures as a receiver would; opentelemetry-proto decodes
# the spans the platform exports (the official protobuf definitions); pytest-xdist splits the
# suite across the cores, a module per worker.
if ! "$STATE_DIR/venv/bin/python" -c 'import gql, requests, pytest, xdist, playwright, standardwebhooks, opentelemetry.proto' >/dev/null 2>&1; then
  log "installing python test clients"
  [ -x "$STATE_DIR/venv/bin/pip" ] || python3 -m venv "$STATE_DIR/venv"
  "$STATE_DIR/venv/bin/pip" install -q 'gql[websockets,requests]' requests pytest pytest-xdist playwright standardwebhooks opentelemetry-proto
fi

log "ready: postgres://$PG_USER:***@127.0.0.1:5432/nullops nats://127.0.0.1:$NATS_PORT registry 127.0.0.1:$REGISTRY_PORT"
