#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) are installed for the catalog tests, which
# start their own throwaway server (tests/pgserver.py). Idempotent and quiet: does nothing when
# /usr/lib/postgresql/*/bin/initdb exists; otherwise installs the Debian "postgresql" package
# without letting it create/start the default cluster on port 5432.
set -euo pipefail

have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

have_initdb && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
export DEBIAN_FRONTEND=noninteractive

# No "main" cluster: the tests never use it and it would occupy port 5432. (A createcluster.d
# snippet, read by postgresql-common's createcluster.conf, and not a dpkg conffile.)
"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' |
    "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/00-aisync-ci.conf >/dev/null

install() { "${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1; }
if ! install; then
    "${SUDO[@]}" apt-get update -qq >/dev/null 2>&1
    if ! install; then
        echo "postgres.sh: apt-get install postgresql failed" >&2
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends postgresql >&2 || true
        exit 1
    fi
fi

if ! have_initdb; then
    echo "postgres.sh: postgresql installed but no /usr/lib/postgresql/*/bin/initdb" >&2
    exit 1
fi
