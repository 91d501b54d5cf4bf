"""Issue #11 item 11: checkpoints survive a crash at any instant.

A real process saves `final/` over and over (the real `save_checkpoint`, a small backend
that writes an adapter and an optimizer file holding the step) and is SIGKILLed at
random instants; after every kill `latest_checkpoint` must find a complete `final/`
whose files agree with each other, and no half-written folder may be left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from test_sup_helpers import REPO
from waits import wait_until

from retrain_core.train.checkpoint import STATE_FILE, latest_checkpoint, read_state

SAVER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from retrain_core.train.checkpoint import save_checkpoint

    class Backend:
        def __init__(self):
            self.step = 0
        def save(self, directory):
            directory.mkdir(parents=True, exist_ok=True)
            payload = str(self.step).encode() * 20000  # big enough to take some time
            (directory / "adapter_model.safetensors").write_bytes(payload)
            (directory / "optimizer.pt").write_bytes(payload)

    run_dir, start = Path(sys.argv[1]), int(sys.argv[2])
    backend = Backend()
    for step in range(start, start + 100000):
        backend.step = step
        save_checkpoint(backend, run_dir / "final", {"step": step})
        (run_dir / "saved").write_text(str(step))
''')


def consistent(directory: Path) -> int:
    """The checkpoint's step, after checking every file is whole and from that step."""
    step = read_state(directory)["step"]
    expected = str(step).encode() * 20000
    for name in ("adapter_model.safetensors", "optimizer.pt"):
        assert (directory / name).read_bytes() == expected, f"{name} is not from step {step}"
    return step


def saved_after(run_dir: Path, step: int) -> bool:
    saved = run_dir / "saved"
    try:
        return int(saved.read_text()) > step
    except (OSError, ValueError):
        return False


def test_final_checkpoint_survives_sigkill_at_any_instant(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rng = random.Random(11)
    last = -1
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(last + 1)], env=env)
        try:
            wait_until(lambda last=last: saved_after(run_dir, last), 60, what="a first save")
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        found = latest_checkpoint(run_dir)  # also recovers a set-aside final/
        assert found == run_dir / "final", f"round {round_}: no final checkpoint"
        step = consistent(found)
        assert step > last, f"round {round_}: went back from {last} to {step}"
        last = step
        leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers


def test_a_crash_between_the_two_renames_is_recovered(tmp_path):
    """Without renameat2 the old final/ is set aside first: a crash right then leaves only
    `.final.old<pid>`; the next start puts it back instead of starting from scratch."""
    run_dir = tmp_path / "run"
    aside = run_dir / ".final.old4242"
    aside.mkdir(parents=True)
    (aside / "adapter_model.safetensors").write_bytes(b"7" * 20000)
    (aside / "optimizer.pt").write_bytes(b"7" * 20000)
    (aside / STATE_FILE).write_text(json.dumps({"step": 7}))
    half = run_dir / "checkpoints" / ".step_8.tmp4242"
    half.mkdir(parents=True)
    (half / "adapter_model.safetensors").write_bytes(b"8")
    found = latest_checkpoint(run_dir)
    assert found == run_dir / "final" and consistent(found) == 7
    assert not aside.exists() and not half.exists()  # half-written folders are removed
