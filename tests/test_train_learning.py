"""A short real learning run: RL on the tiny model lifts held-out accuracy (one seed)."""

from __future__ import annotations

import pytest

from retrain_core.config.schema import Config
from retrain_core.train.data import heldout_examples
from retrain_core.train.evaluate import heldout_accuracy

STEPS = 30


@pytest.mark.slow
def test_short_run_lifts_heldout_sampled_accuracy(tmp_path, tiny_model_dir):
    from retrain_core.train.loop import Trainer

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(tiny_model_dir), 8, "cpu"
    cfg.algorithm.advantage_mode, cfg.algorithm.transform_mode = "maxrl", "gtpo_sepa"
    t = cfg.training
    t.seed, t.max_steps, t.batch_size, t.group_size, t.max_tokens = 42, STEPS, 4, 8, 40
    t.temperature, t.top_p, t.lr, t.save_every = 1.0, 1.0, 2e-3, 0
    cfg.data.source = "arithmetic"
    cfg.sepa.steps, cfg.sepa.delay_steps = 20, 2
    cfg.logging.log_generations = False
    trainer = Trainer(cfg, tmp_path / "run", "learn", "maxrl+gtpo_sepa", quiet=True)
    held = heldout_examples("arithmetic")

    def accuracy() -> float:
        return heldout_accuracy(trainer.backend, held, cfg.data.prompt_template, t.temperature, t.max_tokens, seed=7)

    before = accuracy()
    assert 0.15 <= before <= 0.6  # the warm start leaves signal and room to improve
    assert trainer.run() == 0
    after = accuracy()
    # n = 277 held-out problems: +5 points is well outside sampling noise for the fixed seed.
    assert after - before >= 0.05, (before, after)
