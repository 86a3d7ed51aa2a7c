#!/usr/bin/env bash
# Make sure the S3 command-line clients that tests/s3/test_clients*.py drive are installed:
# s3cmd and rclone from apt (awscli and s3fs come from pyproject's dev extras). Idempotent and
# quiet: does nothing when both are on PATH; otherwise installs the missing ones, running
# `apt-get update` only if the first install attempt fails.
set -euo pipefail

missing=()
command -v s3cmd >/dev/null 2>&1 || missing+=(s3cmd)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
export DEBIAN_FRONTEND=noninteractive

install() {
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
}
if ! install; then
    "${SUDO[@]}" apt-get update -qq >/dev/null 2>&1
    if ! install; then
        echo "clients.sh: apt-get install ${missing[*]} failed" >&2
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || true
        exit 1
    fi
fi

for tool in "${missing[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "clients.sh: $tool installed but not on PATH" >&2
        exit 1
    fi
done
