#!/usr/bin/env bash
# The README's two commands, as a newcomer runs them, on a busy box: a fresh clone of this
# repository, both cores kept busy by another process, then
#   1. `make demo` until the editor is on screen (tmux, 100x30): seconds after set-up;
#   2. `make test` ROUNDS times in a row: pass/fail and wall time of each.
#
# usage: bench/first_ten_minutes.sh [ROUNDS=3] [LOAD=2]   (LOAD=0: an idle run)
# Prints one line per measurement; exits non-zero if any round failed.
set -uo pipefail

ROUNDS="${1:-3}"
LOAD="${2:-2}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/first-ten-XXXX)"
LOADERS=()

cleanup() {
  for pid in "${LOADERS[@]}"; do kill "$pid" 2>/dev/null; done
  tmux kill-session -t first-ten 2>/dev/null || true
}
trap cleanup EXIT

echo "fresh clone into $WORK/repo"
git clone -q "$REPO" "$WORK/repo" || exit 1
[ -d "$REPO/../shared" ] && ln -s "$(cd "$REPO/../shared" && pwd)" "$WORK/shared"
cd "$WORK/repo" || exit 1

for _ in $(seq 1 "$LOAD"); do
  ( while :; do :; done ) &   # a busy core, like `yes > /dev/null`
  LOADERS+=("$!")
done
echo "load: $LOAD busy loop(s) started; uptime: $(uptime)"

start=$(date +%s)
make setup > "$WORK/setup.log" 2>&1 || { echo "make setup FAILED (see $WORK/setup.log)"; exit 1; }
echo "make setup: $(( $(date +%s) - start )) s"

start=$(date +%s.%N)
tmux new-session -d -s first-ten -x 100 -y 30 "make demo"
shown=""
for _ in $(seq 1 600); do
  if tmux capture-pane -p -t first-ten | grep -q "retrain-tui · editor"; then shown=1; break; fi
  sleep 0.2
done
if [ -n "$shown" ]; then
  printf 'make demo: editor on screen after %.1f s\n' "$(echo "$(date +%s.%N) - $start" | bc)"
  tmux capture-pane -p -t first-ten > "$WORK/demo-screen.txt"
else
  echo "make demo: editor NOT on screen after 120 s"; tmux capture-pane -p -t first-ten | tail -20
fi
tmux send-keys -t first-ten q
sleep 2
tmux kill-session -t first-ten 2>/dev/null || true

failed=0
for round in $(seq 1 "$ROUNDS"); do
  start=$(date +%s)
  if make test > "$WORK/test$round.log" 2>&1; then verdict=passed; else verdict=FAILED; failed=1; fi
  echo "make test round $round: $verdict in $(( $(date +%s) - start )) s — $(tail -1 "$WORK/test$round.log")"
done
echo "logs in $WORK"
exit $failed
