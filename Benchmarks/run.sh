#!/usr/bin/env bash
# Runs every KeyRoll benchmark on a release build and writes docs/benchmarks.md.
# Each figure is printed next to a bound measured in the same run (RSA on this CPU, /bin/true, the
# same binary asleep, or keyroll itself for the peers), so results compare across noisy machines.
#
#   Benchmarks/run.sh                 # all, ~10 min after a ~10 min release build
#   APPS=200 IDLE=60 REPS=3 Benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
APPS=${APPS:-200} IDLE=${IDLE:-60} REPS=${REPS:-3} IDENTITIES=${IDENTITIES:-100}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
scripts/python-env >&2
[ -x .venv-azcli/bin/az ] || { python3 -m venv .venv-azcli && .venv-azcli/bin/pip install -q azure-cli; }
swift build -c release --product keyroll --scratch-path .build-release
swift build -c release --product keyroll-lab --scratch-path .build-release
K=.build-release/release/keyroll-lab   # runs the production keyroll built beside it as its agents
out=Benchmarks/results.jsonl
: > "$out"
export KEYROLL_PYTHON=$PWD/.venv-py/bin/python
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
$K bench crypto --seconds 3 --keys 30 --json | tee -a "$out"
$K bench rolls --apps "$APPS" --json | tee -a "$out"
$K bench emulator --seconds 10 --connections 16 --apps 100 --json | tee -a "$out"
$K bench footprint --idle-seconds "$IDLE" --identities "$IDENTITIES" --json | tee -a "$out"
$K bench token-endpoint --requests 300 --json | tee -a "$out"
$K bench peers --reps "$REPS" --python .venv-py/bin/python --az .venv-azcli/bin/az --json | tee -a "$out"
python3 Benchmarks/render.py "$out" docs/benchmarks.md
echo "wrote $out and the table in docs/benchmarks.md" >&2
