#!/usr/bin/env bash
# Make a Docker engine answer and build the sandbox base image; idempotent.
# Where that is impossible (not root, no apt, install fails) it warns that the local
# fallback sandbox will be used and exits 0: everything still runs, less isolated.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${SKILLGYM_DOCKERD_LOG:-/var/log/skillgym-dockerd.log}

say() { printf '\033[1m[setup_docker]\033[0m %s\n' "$*"; }
fallback() {
  say "WARNING: $*"
  say "WARNING: no Docker sandbox; skillgym will use the local fallback sandbox (bubblewrap if present, else NO isolation)."
  exit 0
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! engine_answers; then
  [ "$(id -u)" = 0 ] || fallback "no Docker engine answers and we are not root, so none can be installed or started"
  if ! command -v dockerd >/dev/null; then
    command -v apt-get >/dev/null || fallback "dockerd is missing and apt-get is not available to install it"
    say "installing docker.io"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; } \
      || fallback "apt-get install docker.io failed"
  fi
  if ! pgrep -x dockerd >/dev/null; then
    # A dockerd killed with its session leaves pid files behind, and a new one refuses to
    # start while they exist: remove them when their process is gone.
    for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
      if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
        rm -f "$pidfile"
      fi
    done
    # No iptables and no default bridge: works inside containers and unprivileged VMs, and
    # sandboxes use network_mode=none anyway.
    say "starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    nohup dockerd --iptables=false --bridge=none >>"$LOG" 2>&1 &
  fi
  for _ in $(seq 1 60); do engine_answers && break; sleep 1; done
  engine_answers || fallback "dockerd did not answer within 60 s (see $LOG)"
fi
say "Docker engine answers"

# debootstrap builds the base image where no registry is reachable.
if ! command -v debootstrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } \
    || say "could not install debootstrap; the image build needs a reachable registry then"
fi

say "building (or reusing) the sandbox base image"
$PY -m skillgym.sandbox.images || fallback "the sandbox base image could not be built (see the error above)"
# frontend-design-v0's image: the base plus Chromium and fonts (~1.2 GB, ~2 min on first build).
say "building (or reusing) the frontend image (Chromium, fonts)"
$PY -m skillgym.sandbox.images --derived frontend \
  || say "WARNING: the frontend image could not be built; frontend-design-v0 will not run (see above)"
say "done"
