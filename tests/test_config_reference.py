"""The configuration reference in configs/README.md is generated from the docstrings under the
fields of retrain_core/config/schema.py (tools/gen_config_reference.py): it fails when the two
drift apart, and a field without a docstring is named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tools import gen_config_reference as gen

REPO = Path(__file__).resolve().parent.parent


def test_readme_reference_is_what_the_schema_generates():
    readme = gen.README.read_text()
    assert gen.updated(readme, gen.render(gen.SCHEMA.read_text())) == readme, (
        "configs/README.md is stale: run .venv/bin/python tools/gen_config_reference.py")


def test_every_key_of_every_section_has_a_row():
    table = gen.render(gen.SCHEMA.read_text())
    for section, cls in gen.sections():
        for field in dataclasses.fields(cls):
            assert f"| `{section}.{field.name}` |" in table


def test_a_field_without_a_docstring_is_named():
    source = gen.SCHEMA.read_text().replace(
        '    lr: float = 4e-5\n    """Learning rate."""\n', "    lr: float = 4e-5\n")
    assert source != gen.SCHEMA.read_text()
    with pytest.raises(ValueError, match=r"TrainingConfig\.lr\b"):
        gen.render(source)


def test_check_fails_on_a_stale_table(tmp_path, monkeypatch):
    stale = gen.README.read_text().replace("| Learning rate. |", "| The learning rate. |")
    assert stale != gen.README.read_text()
    monkeypatch.setattr(gen, "README", tmp_path / "README.md")
    gen.README.write_text(stale)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0  # regenerates
    assert gen.main(["--check"]) == 0
    assert "| Learning rate. |" in gen.README.read_text()


def test_the_script_runs_from_anywhere(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "gen_config_reference.py"),
                           "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
