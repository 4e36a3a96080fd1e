#!/usr/bin/env bash
# Set everything up, check the tree with ruff (lint and format), then run the whole test
# suite (listing its 25 slowest tests, to keep the suite inside its CI budget). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check .
python3 -m ruff format --check .
exec python3 -m pytest -q -rs --durations=25 "$@"
