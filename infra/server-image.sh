#!/usr/bin/env bash
# Builds the server image (infra/server/Dockerfile): nullops/server:VERSION and :latest. The
# same image runs `server` (the default), `connector` or `ingress`: give the subcommand.
# Usage: server-image.sh [BINARY]   (default: the release build)
exec bash "$(dirname "$0")/image.sh" server "$@"
