"""The evaluation's switch for shipping the operating point, as a user types it on the command line."""

from __future__ import annotations

import json

import pytest

from bundle.inference.operating_point import write_if

CHOSEN = {"score_threshold": 1.5, "sensitivity_ge10": 0.9, "fp_per_volume": 0.5}


@pytest.mark.parametrize("flag", [False, "false", "False", "0", "no", None])
def test_false_in_any_spelling_writes_nothing(flag, tmp_path):
    assert write_if(flag, tmp_path, CHOSEN) is None
    assert not (tmp_path / "operating_point.json").exists()


@pytest.mark.parametrize("flag", [True, "true", "True"])
def test_true_writes_the_file(flag, tmp_path):
    path = write_if(flag, tmp_path, CHOSEN)
    assert path == tmp_path / "operating_point.json"
    assert json.loads(path.read_text())["score_threshold"] == pytest.approx(1.5)


def test_anything_else_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="write_operating_point: 'maybe'"):
        write_if("maybe", tmp_path, CHOSEN)
