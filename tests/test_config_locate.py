"""The key locator behind every problem's line number."""

from __future__ import annotations

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrain_core.config.locate import guess_key_at_line, line_of, locate_keys

TRICKY = '''\
# [not.a.table] = 1
[training]  # comment with [brackets] and = signs
lr = 1e-5
note = """a multi-line
[fake]
x = 1 string"""
lit = \'\'\'[also] fake\'\'\'

[campaign]
seeds = [
  1,  # [comment]
  2,
]
"quoted.key" = "v"

[[campaign.conditions]]
advantage_mode = "grpo"
sepa = { steps = 3, nested.deep = [1, {a = 2}] }

[[campaign.conditions]]
advantage_mode = "maxrl"

[campaign.conditions.transform_params]
scale = 2
'''


def test_tricky_document_lines() -> None:
    locs = locate_keys(TRICKY)
    assert locs["training"] == 2 and locs["training.lr"] == 3 and locs["training.lit"] == 7
    assert "fake" not in locs and "not" not in locs
    assert locs["campaign.seeds[1]"] == 12
    assert locs["campaign.quoted.key"] == 14
    assert locs["campaign.conditions[0]"] == 16
    assert locs["campaign.conditions[0].sepa.nested.deep[1].a"] == 18
    assert locs["campaign.conditions[1].advantage_mode"] == 21
    assert locs["campaign.conditions[1].transform_params.scale"] == 24


def test_lookup_falls_back_to_the_nearest_parent() -> None:
    locs = locate_keys(TRICKY)
    assert line_of(locs, "campaign.conditions[0].sepa.missing") == 18
    assert line_of(locs, "campaign.conditions[1].nothing") == 20
    assert line_of(locs, "absent.key") == 0


def test_guess_key_of_a_broken_line() -> None:
    text = "[model]\nlora_rank = 8\n[training]\nbatch_size = = 3\n"
    assert guess_key_at_line(text, 4) == "training.batch_size"
    assert guess_key_at_line(text, 3) == "training"


keys = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
scalars = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False),
                    st.text(alphabet=st.sampled_from(list("ab[]{}=#\"'\n,. \\")), max_size=10))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=3)),
                      max_leaves=10)


def paths(table: dict, prefix: str = ""):
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, key
        if isinstance(value, dict):
            yield from paths(value, path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, st.dictionaries(keys, values, max_size=4), max_size=4), st.booleans())
def test_every_key_of_a_valid_document_is_located_on_its_line(doc: dict, multiline: bool) -> None:
    text = tomli_w.dumps(doc, multiline_strings=multiline)
    locs = locate_keys(text)
    lines = text.splitlines()
    for path, key in paths(doc):
        assert key in lines[locs[path] - 1], (path, text)


def test_broken_arrays_end_the_scan_instead_of_looping() -> None:
    """`a = [1 }` (reachable from the editor's live validation) used to loop forever:
    run in a child process so the old behaviour fails the test instead of hanging it."""
    import json
    import subprocess
    import sys

    docs = ["a = [1 }", "a = [1", "a = [1, 2 x", "[t]\nb = [[1, 2] }\nc = 3", "a = {b = [1 }", "a = " + "[" * 5000]
    code = ("import json, sys\nfrom retrain_core.config.locate import locate_keys\n"
            "print(json.dumps([locate_keys(d) for d in json.loads(sys.stdin.read())]))")
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(docs), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found[0] == {"a": 1, "a[0]": 1} and found[3]["t.b"] == 2
