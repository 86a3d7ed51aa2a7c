#!/usr/bin/env bash
# Make sure Azurite's blob server (npm package "azurite") is installed for the Azure provider
# tests (tests/backends/azurite_server.py starts it). Idempotent and quiet: does nothing when
# `azurite-blob` is already on PATH; otherwise installs it globally with npm (needs Node >= 18).
set -euo pipefail

command -v azurite-blob >/dev/null 2>&1 && exit 0

if ! command -v npm >/dev/null 2>&1; then
    echo "azurite.sh: npm not found; install Node.js (>= 18) and npm first" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(npm config get prefix)" ]; then SUDO=(sudo -n); fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${SUDO[@]}" npm install -g --no-audit --no-fund --loglevel=error azurite >"$log" 2>&1; then
    echo "azurite.sh: npm install -g azurite failed:" >&2
    cat "$log" >&2
    exit 1
fi

if ! command -v azurite-blob >/dev/null 2>&1; then
    echo "azurite.sh: azurite installed but azurite-blob is not on PATH" \
         "(npm prefix: $(npm config get prefix))" >&2
    exit 1
fi
