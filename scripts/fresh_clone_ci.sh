#!/usr/bin/env bash
# Run .ci/run as CI does: on a fresh clone of this repository's HEAD with ../shared beside it, CI=true and
# no stdin; with --load, beside a one-core CPU hog (stress-ng --cpu 1) for the whole run. Prints the total
# time, the pytest time and the suite's time-budget summary; the exit code is .ci/run's.
#
#   scripts/fresh_clone_ci.sh [--load] [--runs N] [WORKDIR]
set -euo pipefail

load=0
runs=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --load) load=1; shift ;;
    --runs) runs="$2"; shift 2 ;;
    *) break ;;
  esac
done
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(cd "$repo/../shared" && pwd)"
work="${1:-$(mktemp -d /tmp/dlstream-ci.XXXXXX)}"
mkdir -p "$work"

hog=""
stop_hog() { [[ -n "$hog" ]] && kill "$hog" 2>/dev/null && wait "$hog" 2>/dev/null; hog=""; }
trap stop_hog EXIT
if [[ $load == 1 ]]; then
  command -v stress-ng >/dev/null || { echo "--load needs stress-ng (apt-get install stress-ng)" >&2; exit 2; }
  stress-ng --cpu 1 --quiet &
  hog=$!
fi

# Jiffies the machine's CPUs spent busy (user, nice, system, irq, softirq, steal) since boot.
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

status=0
for run in $(seq 1 "$runs"); do
  dir="$work/run-$run"
  rm -rf "$dir"
  mkdir -p "$dir"
  git clone -q "$repo" "$dir/main"
  cp -r "$shared" "$dir/shared"
  start=$(date +%s)
  busy_before=$(cpu_busy)
  set +e
  (cd "$dir/main" && CI=true bash .ci/run </dev/null >"$dir/ci.log" 2>&1)
  code=$?
  set -e
  total=$(( $(date +%s) - start ))
  busy=$(( $(cpu_busy) - busy_before ))
  ticks=$(getconf CLK_TCK)
  pytest_line=$(grep -E "^=+ .*(passed|failed).* in [0-9.]+s" "$dir/ci.log" | tail -1 || true)
  echo "run $run: exit $code after ${total} s ($(( total / 60 )) min $(( total % 60 )) s); load: $([[ $load == 1 ]] && echo 'stress-ng --cpu 1' || echo none)"
  echo "  pytest: ${pytest_line:-no summary}"
  # Whether the run waits or computes: the machine's busy cores on average over the run, the hog included.
  echo "  cpu: $(awk -v b="$busy" -v t="$ticks" -v s="$total" 'BEGIN { printf "%.2f", b / t / (s > 0 ? s : 1) }') of $(nproc) cores busy on average"
  # The summaries of the budget and of the session stack, to the end of pytest's output.
  sed -n '/= \(time budget\|session stack\) =/,$p' "$dir/ci.log" | sed 's/^/  /'
  echo "  log: $dir/ci.log"
  [[ $code == 0 ]] || { status=$code; break; }
done
exit "$status"
