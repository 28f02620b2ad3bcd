#!/usr/bin/env bash
# The device check: installs the carried wheels (.whl/: mlxtend, normflows and what they need,
# which the GPU image lacks), then runs benchmarks/gpu_check.py; its results go to $OUT when the
# device tool sets it, else benchmarks/results. Pass --dry-run to check the script on a CPU.
#   device run (carry .whl):  bash benchmarks/gpu_check.sh
#   here:                     bash benchmarks/gpu_check.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py --out "${OUT:-benchmarks/results}" "$@"
