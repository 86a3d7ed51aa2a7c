#!/usr/bin/env bash
# Tools of the WAN tests and benchmark (tests/wan, benchmarks/bench_wan.py) on a fresh
# Debian/Ubuntu machine, as root: iproute2 (network namespaces, veth pairs, tc) and, for kernels
# without netem, iptables plus the PyPI package NetfilterQueue (built against
# libnetfilter-queue-dev). Idempotent: installs only what is missing.
set -euo pipefail
PYTHON=${PYTHON:-python3}
has_nfq() { "$PYTHON" -c "import netfilterqueue" 2>/dev/null; }
need=()
command -v ip >/dev/null && command -v tc >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
if ! has_nfq; then
  dpkg -s libnetfilter-queue-dev >/dev/null 2>&1 || need+=(libnetfilter-queue-dev)
  command -v gcc >/dev/null || need+=(build-essential)
  "$PYTHON" -c "import os, sysconfig; p = sysconfig.get_paths()['include']
raise SystemExit(not os.path.exists(os.path.join(p, 'Python.h')))" || need+=(python3-dev)
fi
if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || { echo ".ci/wan.sh: needs root to install ${need[*]}" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
has_nfq || "$PYTHON" -m pip install -q 'NetfilterQueue>=1.1'
has_nfq
