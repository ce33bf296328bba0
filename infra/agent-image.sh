#!/usr/bin/env bash
# Builds the agent image (infra/agent/Dockerfile): nullops/agent:VERSION and :latest.
# Usage: agent-image.sh [BINARY]   (default: the release build)
exec bash "$(dirname "$0")/image.sh" agent "$@"
