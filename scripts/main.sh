#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default: distill the
# codebase-explorer subagent into the tiny CPU student (teacher rollouts → export → SFT →
# evaluation of teacher, untrained and trained student → runs/distill/report.md).
# Re-running resumes: finished stages are cached. Extra arguments go to `skillgym distill`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec skillgym distill codebase-explorer-v0 --teacher expert --student tiny --out runs/distill "$@"
