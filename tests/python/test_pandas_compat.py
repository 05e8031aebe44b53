"""Cases whose parsing differs between pandas 2.2 (upstream's pin) and pandas 3 (a fresh install):
our graders must give the same verdicts and scores under both.

Run this file under both versions; with MLEBENCH_HPC_ALT_PYTHON pointing at another interpreter
(e.g. a venv with pandas==2.2.*), the last test also compares the two directly.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlebench_hpc.grading import load_competition
from mlebench_hpc.grading.procedures import as_text
from mlebench_hpc.grading.validation import read_csv

TEXT_ID = "text-normalization-challenge-english-language"
NA_LIKE = ["null", "NaN", "N/A", "", "nan", "NA", "None", "#N/A", "-nan"]


def _text_competition(root: Path) -> None:
    private = root / TEXT_ID / "prepared" / "private"
    private.mkdir(parents=True)
    rows = [f'"0_{i}","{tok}"' for i, tok in enumerate(NA_LIKE)] + ['"1_0","twelve"']
    (private / "answers.csv").write_text('"id","after"\n' + "\n".join(rows) + "\n")


def _spaceship(root: Path) -> None:
    private = root / "spaceship-titanic" / "prepared" / "private"
    private.mkdir(parents=True)
    (private / "test.csv").write_text("PassengerId,Transported\n0001_01,True\n0002_01,False\n0003_01,True\n")


def compat_results(root: Path) -> dict[str, object]:
    """Verdicts and scores of the version-sensitive cases (also run under the other pandas)."""
    _text_competition(root)
    _spaceship(root)
    text = load_competition(TEXT_ID, root)
    out: dict[str, object] = {}
    same = root / "same.csv"
    same.write_text((root / TEXT_ID / "prepared" / "private" / "answers.csv").read_text())
    out["text_identical"] = text.score(same)
    # "nan" written for every NA-like answer: only the literal "nan" row matches (plus "twelve").
    as_nan = root / "as_nan.csv"
    as_nan.write_text("id,after\n" + "".join(f"0_{i},nan\n" for i in range(len(NA_LIKE))) + "1_0,twelve\n")
    out["text_nan_everywhere"] = text.score(as_nan)
    empty_id = root / "empty_id.csv"
    empty_id.write_text("id,after\n" + "".join(f"0_{i},x\n" for i in range(len(NA_LIKE))) + ",twelve\n")
    out["text_empty_id"] = text.validate(empty_id)[0]

    space = load_competition("spaceship-titanic", root)
    for name, body in {
        "bool_strings": "0001_01,True\n0002_01,False\n0003_01,False\n",
        "bool_quoted": '"0001_01","True"\n"0002_01","False"\n"0003_01","True"\n',
        "bool_lower": "0001_01,true\n0002_01,false\n0003_01,true\n",
        "bool_ints": "0001_01,1\n0002_01,0\n0003_01,1\n",
        "bool_with_nan": "0001_01,True\n0002_01,\n0003_01,True\n",
        "bool_junk": "0001_01,True\n0002_01,no\n0003_01,True\n",
    }.items():
        path = root / f"{name}.csv"
        path.write_text("PassengerId,Transported\n" + body)
        ok, _ = space.validate(path)
        out[name] = space.score(path) if ok else "invalid"
    return out


EXPECTED = {
    "text_identical": 1.0,
    # upstream reads every NA-like token as NaN on both sides and compares astype(str): "nan" == "nan"
    "text_nan_everywhere": 1.0,
    "text_empty_id": False,
    "bool_strings": round(2 / 3, 5),
    "bool_quoted": 1.0,
    "bool_lower": 1.0,
    "bool_ints": 1.0,
    "bool_with_nan": "invalid",
    "bool_junk": "invalid",
}


def test_version_sensitive_cases(tmp_path: Path) -> None:
    assert compat_results(tmp_path) == EXPECTED


def test_text_columns_read_as_pandas_22_reads_them(tmp_path: Path) -> None:
    _text_competition(tmp_path)
    table = read_csv(tmp_path / TEXT_ID / "prepared" / "private" / "answers.csv")
    assert table["after"].dtype == object  # not pandas 3's str dtype
    assert table["after"].isna().tolist() == [True] * len(NA_LIKE) + [False]
    assert as_text(table["after"].to_numpy()).tolist() == ["nan"] * len(NA_LIKE) + ["twelve"]


def test_float_parsing_is_round_trip(tmp_path: Path) -> None:
    rnd = random.Random(7)
    values = [f"{rnd.random() * 10 ** rnd.randint(-20, 20):.{rnd.randint(1, 19)}g}" for _ in range(20000)]
    path = tmp_path / "f.csv"
    path.write_text("x\n" + "\n".join(values) + "\n")
    parsed = read_csv(path)["x"].to_numpy()
    assert np.array_equal(parsed, np.array([float(v) for v in values]))


def test_ids_are_inferred_as_upstream_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id,v\n007,1\n7,2\n")
    assert read_csv(path)["id"].tolist() == [7, 7]  # numbers, as pandas reads them for upstream


def test_empty_file_is_an_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("")
    assert read_csv(path).empty


def test_same_results_under_the_other_pandas(tmp_path: Path) -> None:
    alt = os.environ.get("MLEBENCH_HPC_ALT_PYTHON")
    if not alt:
        pytest.skip("set MLEBENCH_HPC_ALT_PYTHON to an interpreter with the other pandas major version")
    helpers = Path(__file__).resolve().parents[2] / "helpers"
    code = (
        "import json, sys; from pathlib import Path; import pandas;"
        f"sys.path[:0] = [{str(helpers)!r}, {str(Path(__file__).parent)!r}];"
        "from test_pandas_compat import compat_results;"
        "print(json.dumps([pandas.__version__, compat_results(Path(sys.argv[1]))]))"
    )
    proc = subprocess.run([alt, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version, results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert version.split(".")[0] != pd.__version__.split(".")[0], "use a different pandas major version"
    assert results == EXPECTED, (version, results)
    print(f"compared with pandas {version} via {alt}", file=sys.stderr)
