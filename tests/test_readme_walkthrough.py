"""The README's notebook-style walkthrough runs as written, cell by cell."""

import os
import re
import warnings

import pytest

from secure_meanshift import simulate
from secure_meanshift.validation import ColumnOrderWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def walkthrough_cells() -> list:
    with open(os.path.join(ROOT, "README.md")) as fh:
        text = fh.read()
    start = text.index("### A walkthrough (notebook style)")
    end = text.index("Its defaults are scikit-learn's semantics", start)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_walkthrough_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)

    def refuse(self):
        raise AssertionError("the walkthrough's refused fits must not start a process")

    monkeypatch.setattr(simulate.PartyProcess, "start", refuse)
    cells = walkthrough_cells()
    assert len(cells) >= 5
    ns: dict = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for cell in cells:
            exec(compile(cell, "README walkthrough", "exec"), ns)
    assert any(issubclass(w.category, ColumnOrderWarning) for w in seen)
    out = capsys.readouterr().out
    assert " True True" in out                              # same labels and n_iter_ as sklearn
    assert ns["np"].abs(ns["ms"].cluster_centers_ - ns["sk"].cluster_centers_).max() < 1e-3
    assert out.count("refused:") == 3
    assert "party 1: has no column 'age'" in out and "row 7, column 0 ('age')" in out
    assert "clip or remove outliers" in out
    assert (tmp_path / "walkthrough.png").stat().st_size > 1000
