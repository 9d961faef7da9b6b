#!/usr/bin/env bash
# Check the Promela model of the replication protocol (model/replication.pml) with spin.
#
#   model/run.sh                 the safety check (make test-model)
#   model/run.sh -DBUG_X ...     the same with extra spin -D options (a seeded bug)
#   MODEL_CHECK=liveness model/run.sh   the liveness property `live` under weak fairness
#                                (exhaustive for its small default bounds, about 30 s)
#
# Environment:
#   MODEL_CHECK    "safety" (default: the assertions) or "liveness" (the LTL formula `live`)
#   MODEL_MINUTES  time limit of the search in minutes (default 2)
#   MODEL_BOUNDS   spin -D options for the bounds (default: the small configurations below)
#   MODEL_SEARCH   "bitstate" (supertrace, 512 MB of bits; the default for safety) or "full"
#                  (exhaustive, states stored whole with -DCOLLAPSE; the default for liveness;
#                  needs memory and time for the larger bounds)
#   MODEL_OPT      gcc's optimisation of the verifier (default -O2; -O0 compiles in a second
#                  instead of five, for searches that end within a second)
#
# Exit status: 0 no error found, 1 spin reported an error (its trail is replayed on stderr),
# 2 usage or tool error. The last line of output is "MODEL OK ..." or "MODEL ERROR ...".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
minutes="${MODEL_MINUTES:-2}"
check="${MODEL_CHECK:-safety}"
default_search=bitstate
[ "$check" = liveness ] && default_search=full
search="${MODEL_SEARCH:-$default_search}"
case "$check" in
  safety) bounds="${MODEL_BOUNDS:--DMAXC=1 -DMAXSEQ=1 -DNH=2 -DLOSSES=0 -DSCRASHES=0}" ;;
  liveness) bounds="-DLIVENESS ${MODEL_BOUNDS:--DMAXC=1 -DMAXSEQ=1 -DNH=1 -DLOSSES=0 -DSCRASHES=0 -DSTEALS=0 -DFORGETS=0}" ;;
  *) echo "run.sh: MODEL_CHECK must be safety or liveness" >&2; exit 2 ;;
esac

command -v spin >/dev/null || { echo "run.sh: spin is not installed (apt-get install spin)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "run.sh: gcc is not installed" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/tmr-model.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$here/replication.pml" "$work/"
cd "$work"

# shellcheck disable=SC2086
spin $bounds "$@" -a replication.pml >spin.out 2>&1 || { cat spin.out >&2; exit 2; }
case "$search" in
  bitstate) cflags=(-DBITSTATE); pflags=(-w32 -k3) ;;
  full) cflags=(-DCOLLAPSE); pflags=(-w24) ;;
  *) echo "run.sh: MODEL_SEARCH must be bitstate or full" >&2; exit 2 ;;
esac
if [ "$check" = safety ]; then
  cflags+=(-DSAFETY)
else
  cflags+=(-DNFAIR=5)     # weak fairness over the 16 processes
  pflags+=(-a -f)         # acceptance cycles of the never claim, weak fairness
fi
gcc "${MODEL_OPT:--O2}" -w "${cflags[@]}" -DMEMLIM=4096 -o pan pan.c || exit 2

start=$(date +%s)
set +e
./pan -m100000 -c1 -n "-Q$minutes" "${pflags[@]}" >pan.out 2>&1
set -e
took=$(( $(date +%s) - start ))
grep -E "assertion violated|acceptance cycle|errors:|State-vector|states, stored|transitions|depth reached|elapsed|hash factor|Search not completed|time-limit|Time limit|max search depth|out of memory" pan.out || true
stored=$(awk '/states, stored/ {$1 = $1; print; exit}' pan.out)
errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | head -1)
if [ -z "$errors" ]; then
  cat pan.out >&2
  echo "MODEL ERROR: pan gave no result"
  exit 2
fi
if [ "$errors" != 0 ]; then
  echo "--- counterexample (spin -t):" >&2
  # shellcheck disable=SC2086
  spin $bounds "$@" -t -p -g replication.pml 2>&1 | grep -E "^ *[0-9]+:.*proc" | tail -60 >&2 || true
  echo "MODEL ERROR: spin found a violation (${took}s, $stored, bounds: $bounds $*)"
  exit 1
fi
complete="complete"
grep -q "Search not completed\|time-limit\|Time limit\|max search depth too small\|out of memory" pan.out &&
  complete="partial (time limit, depth or memory)"
[ "$search" = bitstate ] && [ "$complete" = complete ] && complete="bitstate, may omit states"
echo "MODEL OK: no violation, $stored (${took}s, $search search, $complete; bounds: $bounds $*)"
