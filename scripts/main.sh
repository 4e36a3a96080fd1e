#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec skillgym play codebase-explorer-v0 --policy expert --split test --episodes 3 "$@"
