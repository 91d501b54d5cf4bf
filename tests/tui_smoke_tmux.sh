#!/usr/bin/env bash
# Smoke test of retrain-tui in a real terminal: a 100x30 tmux pane runs
# `retrain-tui demo.toml` (a reduced-steps copy of configs/demo.toml), launches the campaign,
# waits for training steps, kills one run (K, y), quits (q), and then checks with
# `retrain status --json` that the campaign went on without the app and the rest finished.
#
# usage: tests/tui_smoke_tmux.sh [WORKDIR]   (WORKDIR may already hold demo.toml)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$REPO/.venv/bin"
[ -x "$BIN/retrain-tui" ] || BIN="$(dirname "$(command -v retrain-tui)")"
PY="$BIN/python"
WORK="${1:-$(mktemp -d)}"
SESSION="retrain-smoke-$$"
MAX_STEPS=20  # ~0.4 s/step on CPU: time enough to kill a run mid-training

if [ ! -f "$WORK/demo.toml" ]; then
  "$PY" - "$REPO/configs/demo.toml" "$WORK/demo.toml" "$MAX_STEPS" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
text = text.replace("seeds = [42, 101]", "seeds = [42]")
text = re.sub(r"max_steps = \d+", f"max_steps = {sys.argv[3]}", text, count=1)
text = text.replace("stagger_seconds = 2.0", "stagger_seconds = 0.0")
text = re.sub(r"conditions = \[.*?\n\]", 'conditions = [\n'
              '  { advantage_mode = "grpo", transform_mode = "none" },\n'
              '  { advantage_mode = "maxrl", transform_mode = "gtpo" },\n]', text, flags=re.S)
text = text.replace("[squeeze]\nmin_variance_retention = 0.95\n", "")
open(sys.argv[2], "w").write(text)
PYEOF
fi

campaign_dir() { ls -d "$WORK"/logs/campaign_* 2>/dev/null | head -1; }

cleanup() {
  tmux kill-session -t "$SESSION" 2>/dev/null || true
  local dir; dir="$(campaign_dir)"
  if [ -n "$dir" ] && [ "${KEEP_RUNNING:-0}" != 1 ]; then
    "$BIN/retrain" stop "$dir" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

pane() { tmux capture-pane -p -t "$SESSION" 2>/dev/null || true; }

wait_for() {  # wait_for REGEX SECONDS
  local deadline=$((SECONDS + $2))
  until pane | grep -Eq -- "$1"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out waiting for /$1/; the pane shows:"; pane
      [ -n "$(campaign_dir)" ] && tail -20 "$(campaign_dir)/supervisor.log" 2>/dev/null
      exit 1
    fi
    sleep 0.5
  done
}

tmux new-session -d -s "$SESSION" -x 100 -y 30 \
  "cd '$WORK' && '$BIN/retrain-tui' demo.toml --logs-dir logs; echo TUI-EXITED \$?; sleep 600"
echo "editor open?";            wait_for "Launch" 60
tmux send-keys -t "$SESSION" L; wait_for "Launch this campaign" 15
tmux send-keys -t "$SESSION" y; wait_for "supervisor alive" 60
echo "launched: $(campaign_dir)"
echo "waiting for steps";       wait_for " [1-9][0-9]?/$MAX_STEPS " 300
tmux send-keys -t "$SESSION" f; sleep 1          # show running runs only: the victim is on top
tmux send-keys -t "$SESSION" K; wait_for "Kill .*\?" 15
tmux send-keys -t "$SESSION" y; wait_for "1 killed" 60
echo "killed one run; quitting"
tmux send-keys -t "$SESSION" q; wait_for "TUI-EXITED 0" 30
echo "farewell?";               wait_for "re-attach: retrain-tui logs/campaign_" 5

DIR="$(campaign_dir)"
cat > "$WORK/check_status.py" <<'PYEOF'
import json, sys
runs = json.load(open(sys.argv[1]))["campaigns"][0]["runs"]
statuses = sorted(r["status"] for r in runs)
print(" ".join(r["name"] + "=" + r["status"] for r in runs))
if not all(s in ("succeeded", "failed", "killed") for s in statuses):
    sys.exit(1)  # still running
if statuses.count("killed") != 1 or any(s not in ("killed", "succeeded") for s in statuses):
    sys.exit(3)  # wrong outcome
PYEOF
deadline=$((SECONDS + 240))
while :; do
  rc=0
  "$BIN/retrain" status "$DIR" --json > "$WORK/status.json"
  "$PY" "$WORK/check_status.py" "$WORK/status.json" || rc=$?
  [ $rc -eq 0 ] && break
  [ $rc -eq 3 ] && { echo "wrong outcome"; exit 1; }
  [ $SECONDS -ge $deadline ] && { echo "campaign did not finish"; exit 1; }
  sleep 2
done
echo "SMOKE OK"
