"""JsonlTail: partial lines, truncation, rotation, malformed lines, no re-reading."""

from __future__ import annotations

import json
import os

from retrain_core.tail import JsonlTail, read_last_record, read_last_records


def _append(path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def test_missing_then_partial_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []
    _append(path, '{"step": 1}\n{"step": 2')
    assert tail.read_new() == [{"step": 1}]
    assert tail.read_new() == []
    _append(path, ', "loss": 0.5}\n')
    assert tail.read_new() == [{"step": 2, "loss": 0.5}]
    _append(path, "\n\n")
    assert tail.read_new() == [] and tail.malformed == 0


def test_malformed_lines_are_counted_not_fatal(tmp_path):
    path = tmp_path / "m.jsonl"
    _append(path, '{"step": 1}\nnot json\n[1, 2]\n{"step": 2}\n{"a": 1}, {"b": 2}\n')
    tail = JsonlTail(path)
    assert tail.read_new() == [{"step": 1}, {"step": 2}]
    assert tail.malformed == 3


def test_truncation_reads_the_new_content(tmp_path):
    path = tmp_path / "m.jsonl"
    _append(path, "".join(json.dumps({"step": i}) + "\n" for i in range(5)))
    tail = JsonlTail(path)
    assert len(tail.read_new()) == 5
    path.write_text('{"step": 100}\n')  # truncated in place, then rewritten shorter
    assert tail.read_new() == [{"step": 100}]
    _append(path, '{"step": 101}\n')
    assert tail.read_new() == [{"step": 101}]


def test_rotation_drains_old_file_then_follows_new_inode(tmp_path):
    path = tmp_path / "m.jsonl"
    _append(path, '{"step": 1}\n')
    tail = JsonlTail(path)
    assert tail.read_new() == [{"step": 1}]
    _append(path, '{"step": 2}\n')  # written just before the rotation
    os.rename(path, tmp_path / "m.jsonl.1")
    _append(path, '{"step": 3}\n')
    assert tail.read_new() == [{"step": 2}, {"step": 3}]
    os.unlink(path)
    assert tail.read_new() == []
    _append(path, '{"step": 4}\n')
    assert tail.read_new() == [{"step": 4}]


def test_never_rereads_from_the_start(tmp_path):
    path = tmp_path / "m.jsonl"
    _append(path, '{"step": 1}\n' * 1000)
    tail = JsonlTail(path)
    assert len(tail.read_new()) == 1000
    _append(path, '{"step": 2}\n')
    calls = []
    real_pread = os.pread

    def spy(fd, n, offset):
        calls.append((n, offset))
        return real_pread(fd, n, offset)

    os.pread = spy
    try:
        assert tail.read_new() == [{"step": 2}]
        assert tail.read_new() == []
    finally:
        os.pread = real_pread
    assert calls == [(len('{"step": 2}\n'), 12 * 1000)]
    assert tail.lines_read == 1001


def test_read_last_records(tmp_path):
    path = tmp_path / "m.jsonl"
    _append(path, "".join(json.dumps({"step": i}) + "\n" for i in range(50)) + '{"step": 5')
    assert read_last_record(path) == {"step": 49}
    assert [r["step"] for r in read_last_records(path, 3)] == [47, 48, 49]
    assert read_last_record(tmp_path / "missing") is None


def test_stdlib_json_fallback_gives_the_same_results(tmp_path, monkeypatch):
    import retrain_core.tail as tail_module

    path = tmp_path / "m.jsonl"
    _append(path, '{"step": 1}\n  \nnot json\n[1]\n{"step": 2}\n{"step": 3')
    fast = JsonlTail(path)
    expected = fast.read_new()
    monkeypatch.setattr(tail_module, "orjson", None)
    monkeypatch.setattr(tail_module, "_loads", json.loads)
    monkeypatch.setattr(tail_module, "_JSONError", (ValueError,))
    slow = JsonlTail(path)
    assert slow.read_new() == expected == [{"step": 1}, {"step": 2}]
    assert slow.malformed == fast.malformed == 2
