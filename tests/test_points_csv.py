"""The one CSV point reader (secure_meanshift.data.read_csv_points), used by the
engine's load_points and by a party node's data sets: its messages name the line,
the column and the rule, never the file's path nor a value from it."""

import numpy as np
import pytest

from party_node.datasets import DatasetError
from party_node.datasets import load as node_load
from secure_meanshift.data import PointsFileError, load_points, read_csv_points
from secure_meanshift.errors import InputError


def write(tmp_path, text, name="p.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_reads_picks_columns_and_skips_blank_lines(tmp_path):
    path = write(tmp_path, " a , b ,c\n1,2,3\n\n , ,\n4, 5 ,6\n")
    pts, names = read_csv_points(path)
    assert names == ["a", "b", "c"] and np.array_equal(pts, [[1, 2, 3], [4, 5, 6]])
    pts, names = read_csv_points(path, ["c", "a"])
    assert names == ["c", "a"] and np.array_equal(pts, [[3, 1], [6, 4]])
    assert read_csv_points(write(tmp_path, "a,b\n", "h.csv"))[0].shape == (0, 2)


@pytest.mark.parametrize("text, finite, expect", [
    ("a,b\n1,2\n3,-77.125x\n", False, "line 3, column 2 ('b'): not a number"),
    ("a,b\n1,2\n,4\n", False, "line 3, column 1 ('a'): empty"),
    ("a,b\n1,2\n3,4,5\n", False, "line 3: 3 fields, the header has 2"),
    ("a,b\n1,inf\n", True, "line 2, column 2 ('b'): not a finite number"),
    ("", False, "line 1: empty file"),
])
def test_problems_name_line_column_and_rule_only(tmp_path, text, finite, expect):
    path = write(tmp_path, text)
    with pytest.raises(PointsFileError) as e:
        read_csv_points(path, finite=finite)
    assert str(e.value).startswith(expect)
    assert str(tmp_path) not in str(e.value) and "77.125" not in str(e.value)


def test_non_finite_values_are_the_callers_unless_finite(tmp_path):
    pts, _ = read_csv_points(write(tmp_path, "a\nnan\ninf\n"))
    assert np.isnan(pts[0, 0]) and np.isinf(pts[1, 0])


def test_missing_column_says_where_the_names_came_from(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(PointsFileError, match=r"^line 1: column 'z' \(from --columns\) is not"):
        read_csv_points(path, ["z"], columns_from="--columns")


def test_engine_and_node_report_the_same_problem_their_way(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n3,oops\n")
    with pytest.raises(InputError) as engine:
        load_points(path)
    assert str(engine.value) == f"{path}: line 3, column 2 ('b'): not a number"
    with pytest.raises(DatasetError) as node:
        node_load("points", path)
    assert str(node.value) == "data set 'points': line 3, column 2 ('b'): not a number"
    assert node.value.local == f"data set 'points' ({path}): line 3, column 2 ('b'): not a number"


def test_node_wants_data_rows_the_engine_an_empty_array(tmp_path):
    path = write(tmp_path, "a,b\n")
    assert load_points(path).shape == (0, 2)
    with pytest.raises(DatasetError, match="no data rows after the header"):
        node_load("points", path)
