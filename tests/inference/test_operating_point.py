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


SETTINGS = {"detector": {"context_slices": 3, "target_spacing": [1.5, 1.5, 4.0], "amp": False},
            "linking": {"extent": "peak", "min_slices": 1}}  # fmt: skip


def test_a_point_chosen_with_other_linking_names_the_setting_and_keeps_its_threshold(tmp_path, caplog):
    from bundle.inference.operating_point import load, write

    write(tmp_path, CHOSEN | {"settings": SETTINGS})
    # the served side: tuples where the file has lists, no amp (it differs by host): nothing to report
    same = {"detector": {"context_slices": 3, "target_spacing": (1.5, 1.5, 4.0)}, "linking": {"extent": "peak", "min_slices": 1}}
    with caplog.at_level("WARNING"):
        assert load(tmp_path, settings=same)["changed_settings"] == []
    assert "inference settings" not in caplog.text
    other = {"detector": same["detector"], "linking": {"extent": "union", "min_slices": 2}}
    with caplog.at_level("WARNING"):
        got = load(tmp_path, settings=other)
    assert got["score_threshold"] == pytest.approx(1.5)  # still the file's: a better guess than the default
    assert got["changed_settings"] == ["linking.extent: 'peak' -> 'union'", "linking.min_slices: 1 -> 2"]
    assert "operating_point.json: chosen with other inference settings (linking.extent: 'peak' -> 'union'" in caplog.text


def test_a_file_without_settings_compares_nothing(tmp_path, caplog):
    from bundle.inference.operating_point import load, write

    write(tmp_path, CHOSEN)  # written before 0.8.8
    with caplog.at_level("WARNING"):
        assert load(tmp_path, settings=SETTINGS)["changed_settings"] == []
    assert caplog.text == ""
