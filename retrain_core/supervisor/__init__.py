"""Campaign supervisor: detached, staggered, throttled, killable, resumable.

The campaign folder it keeps, file by file: docs/ARCHITECTURE.md ("Campaign directory and
supervisor").

- `campdir`: creates `logs/campaign_<stamp>_<id>/` (campaign.toml, manifest.json, per-run configs)
- `daemon`: the supervisor process (one per campaign, lock held for its lifetime)
- `launcher`: the `Launcher` seam and `LocalLauncher`; `wrapper`: the per-run wrapper
- `proctree`: killing a run's whole process tree safely; `recovery`: adoption after a restart
- `control`: the command-file channel; `squeeze_hook`: auto-squeeze after the first success
- `api`: what the TUI calls; `cli_campaign`, `cli_status`, `cli_control`: the `retrain` commands
"""
