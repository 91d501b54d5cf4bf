"""The Python API the TUI uses: launch, send, read_state/manifest, find_campaigns, resume."""

from __future__ import annotations

import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    wait_until,
    write_campaign,
)

from retrain_core.config import ConfigError
from retrain_core.supervisor import api
from retrain_core.supervisor.campdir import LaunchError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("procs")]


def test_api_round_trip(tmp_path, monkeypatch):
    for key, value in fake_env(tmp_path, step_s=0.05).items():
        monkeypatch.setenv(key, value)
    logs = tmp_path / "logs"
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=40)
    first = api.launch(cfg, logs)
    assert first.parent == logs
    assert api.wait_started(first)
    assert api.supervisor_alive(first)
    api.send(first, "pause")
    wait_until(lambda: api.read_state(first)["supervisor"]["paused"], 10, what="paused")
    api.send(first, "stop")
    wait_until(lambda: not api.supervisor_alive(first), 20, what="stopped")
    st = api.read_state(first)
    assert st["supervisor"]["stopping"] is True
    assert sorted(r["status"] for r in st["runs"].values()) == ["killed", "pending"]
    # resume continues what the stop left pending, adopting nothing that is dead
    api.resume(first)
    wait_until(lambda: api.supervisor_alive(first), 10, what="resumed supervisor")
    assert api.read_manifest(first)["runs"][0]["name"] == "grpo+none_s1"
    second = api.launch(write_campaign(tmp_path, seeds=(3,), conditions=1, max_steps=1,
                                       name="b.toml"), logs)
    assert api.find_campaigns(logs)[0] == second
    assert set(api.find_campaigns(logs)) == {first, second}
    assert api.find_campaigns(second) == [second]
    api.send(first, "stop")
    wait_until(lambda: not api.supervisor_alive(first) and campaign_over(second), 30)
    with pytest.raises(ValueError):
        api.send(first, "kill")  # needs a run name
    with pytest.raises(ValueError):
        api.send(first, "explode")


def test_api_launch_refuses_bad_input(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[campaign]\nseeds = 3\n")
    with pytest.raises(ConfigError):
        api.launch(bad, tmp_path / "logs")
    with pytest.raises(LaunchError, match="tinker"):
        api.launch(write_campaign(tmp_path, backend="tinker"), tmp_path / "logs")
    with pytest.raises(FileNotFoundError):
        api.resume(tmp_path)
