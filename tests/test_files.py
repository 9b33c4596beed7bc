"""convdistill.files: whole files written atomically, JSON lines, markers of finished work."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import orjson
import pytest

from convdistill.files import DoneMarker, StagedFile, write_atomically, write_json, write_jsonl


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_atomically_renames_the_partial_onto_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.jsonl"  # the folder is made
    with write_atomically(target) as partial:
        assert partial.parent == target.parent and partial != target
        assert str(os.getpid()) in partial.name and partial.suffix == ".jsonl"
        partial.write_text("whole\n")
        assert not target.exists()  # nobody sees the file before it is whole
    assert target.read_text() == "whole\n"
    assert _names(target.parent) == ["out.jsonl"]


def test_an_error_leaves_neither_partial_nor_target(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="half way"), write_atomically(target) as partial:
        partial.write_text("half")
        raise RuntimeError("half way")
    assert _names(tmp_path) == []
    # an earlier file under the name stays as it was
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), write_atomically(target) as partial:
        partial.write_text("new")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n" and _names(tmp_path) == ["out.jsonl"]


def test_a_gz_name_is_still_gzipped(tmp_path: Path) -> None:
    records = [{"a": 1}, {"b": [2, 3]}]
    target = write_jsonl(tmp_path / "out.jsonl.gz", records)
    with gzip.open(target, "rb") as stream:
        assert [orjson.loads(line) for line in stream] == records
    assert _names(tmp_path) == ["out.jsonl.gz"]
    # a format read as plain lines under any name keeps them plain
    plain = write_jsonl(tmp_path / "batch.jsonl.gz", records, gzip_by_name=False)
    assert plain.read_bytes() == b'{"a":1}\n{"b":[2,3]}\n'


def test_write_json_is_indented_with_a_final_newline(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", {"x": [1]})
    assert path.read_bytes() == b'{\n  "x": [\n    1\n  ]\n}\n'


def test_a_staged_file_with_a_fixed_name_is_overwritten_by_a_rerun(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    killed = StagedFile(target, per_process=False)
    killed.partial.write_text("left by a killed run")
    rerun = StagedFile(target, per_process=False)
    assert rerun.partial == killed.partial
    rerun.partial.write_text("done\n")
    rerun.commit()
    assert _names(tmp_path) == ["out.jsonl"] and target.read_text() == "done\n"
    pending = StagedFile(target, per_process=False)
    pending.partial.write_text("incomplete")
    pending.discard()
    assert _names(tmp_path) == ["out.jsonl"] and target.read_text() == "done\n"


def test_done_marker_matches_its_key_only(tmp_path: Path) -> None:
    path = tmp_path / "stages" / "a.json"
    marker = DoneMarker(path, {"fingerprint": "f1"})
    assert marker.done() is None  # never ran
    marker.mark({"name": "a", "key": None, "result": {"n": 3}})
    # the record as given, the key in its place
    assert list(json.loads(path.read_text())) == ["name", "key", "result"]
    assert marker.done() == {"name": "a", "key": {"fingerprint": "f1"}, "result": {"n": 3}}
    assert DoneMarker(path, {"fingerprint": "f2"}).done() is None  # other settings
    by_fingerprint = DoneMarker(tmp_path / "data.json", "abc", field="fingerprint")
    by_fingerprint.mark({"files": []})
    assert json.loads((tmp_path / "data.json").read_text()) == {"files": [], "fingerprint": "abc"}
    assert by_fingerprint.done() is not None
    path.write_text("{half")  # a marker cut short counts as none
    assert marker.done() is None
    marker.clear()
    assert not path.exists()
