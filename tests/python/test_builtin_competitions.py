"""Every built-in competition: synthetic answers in upstream's layout, a valid submission, and
our score compared with upstream MLE-bench's own grade function on the same files.

Upstream's graders run in a separate Python process (their source taken from $MLEBENCH_DIR or
the local mirror of openai/mle-bench), so that `mlebench` never becomes importable here and
our backend selection is not disturbed. Without upstream source those comparisons are skipped;
the rest still runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlebench_hpc.grading import CompetitionNotPrepared, UnknownCompetition, backend_info, load_competition
from mlebench_hpc.grading.competitions import DEMO_SPECS, SKIPPED, CompetitionSpec, specs

UPSTREAM_SPECS = [s for s in specs().values() if s not in DEMO_SPECS]
MIRROR = Path("/work/.mirror/openai+mle-bench/repo")
LITE = [
    "aerial-cactus-identification", "aptos2019-blindness-detection", "denoising-dirty-documents",
    "detecting-insults-in-social-commentary", "dog-breed-identification",
    "dogs-vs-cats-redux-kernels-edition", "histopathologic-cancer-detection",
    "jigsaw-toxic-comment-classification-challenge", "leaf-classification", "mlsp-2013-birds",
    "new-york-city-taxi-fare-prediction", "nomad2018-predict-transparent-conductors",
    "plant-pathology-2020-fgvc7", "random-acts-of-pizza", "ranzcr-clip-catheter-line-classification",
    "siim-isic-melanoma-classification", "spooky-author-identification",
    "tabular-playground-series-dec-2021", "tabular-playground-series-may-2022",
    "text-normalization-challenge-english-language", "text-normalization-challenge-russian-language",
    "the-icml-2013-whale-challenge-right-whale-redux",
]  # fmt: skip

# Competitions whose upstream grader relies on row order instead of ids.
ROW_ORDER_GRADERS = {"nomad2018-predict-transparent-conductors"}
INT_ID = {"tabular-playground-series-dec-2021", "tabular-playground-series-may-2022", "mlsp-2013-birds"}


def make_ids(spec: CompetitionSpec, n: int, rng: np.random.Generator) -> list:
    if spec.competition_id in INT_ID:
        return list(rng.permutation(np.arange(1000, 1000 + 3 * n))[:n])
    if spec.kind == "text":
        return [f"{i // 7}_{i % 7}" for i in rng.permutation(n)]
    return [f"{x:012x}" for x in rng.choice(16**10, size=n, replace=False)]


def make_answers(spec: CompetitionSpec, n: int, rng: np.random.Generator) -> pd.DataFrame:
    cols: dict = {spec.id_column: make_ids(spec, n, rng)}
    k = len(spec.targets)
    if spec.kind == "bool":
        cols[spec.targets[0]] = rng.random(n) < 0.5
    elif spec.kind == "probability":
        y = (rng.random((n, k)) < 0.4).astype(int)
        y[:2] = [[0] * k, [1] * k]
        if spec.drop_answer_rows_all_minus_one:
            y[2:6] = -1
        for j, c in enumerate(spec.targets):
            cols[c] = y[:, j].astype(bool) if spec.competition_id == "random-acts-of-pizza" else y[:, j]
    elif spec.kind == "simplex":
        labels = rng.integers(0, k, n)
        labels[:k] = np.arange(k) if n >= k else labels[:k]
        onehot = np.eye(k, dtype=int)[labels]
        for j, c in enumerate(spec.targets):
            cols[c] = onehot[:, j]
    elif spec.kind == "int_label":
        cols[spec.targets[0]] = rng.choice(spec.labels, n)
    elif spec.kind in ("real", "nonneg"):
        for c in spec.targets:
            cols[c] = np.round(rng.random(n) * 20, 4)
    elif spec.kind == "text":
        words = ["one", "two", "three", "sil", "<self>", "twenty twenty"]
        cols[spec.targets[0]] = rng.choice(words, n)
    return pd.DataFrame(cols)


def make_submission(spec: CompetitionSpec, answers: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n, k = len(answers), len(spec.targets)
    order = np.arange(n) if spec.competition_id in ROW_ORDER_GRADERS else rng.permutation(n)
    sub: dict = {spec.id_column: answers[spec.id_column].to_numpy()[order]}
    if spec.kind == "bool":
        sub[spec.targets[0]] = rng.random(n) < 0.5
    elif spec.kind == "probability":
        for c in spec.targets:
            sub[c] = np.round(rng.random(n), 3)  # ties on purpose
    elif spec.kind == "simplex":
        p = rng.random((n, k)) ** 2
        p[0, 0] = 0.0
        p /= p.sum(axis=1, keepdims=True)
        for j, c in enumerate(spec.targets):
            sub[c] = p[:, j]
    elif spec.kind == "int_label":
        truth = answers[spec.targets[0]].to_numpy()[order]
        sub[spec.targets[0]] = np.where(rng.random(n) < 0.6, truth, rng.choice(spec.labels, n))
    elif spec.kind in ("real", "nonneg"):
        for c in spec.targets:
            sub[c] = np.round(rng.random(n) * 20, 3)
    elif spec.kind == "text":
        truth = answers[spec.targets[0]].to_numpy()[order]
        sub[spec.targets[0]] = np.where(rng.random(n) < 0.7, truth, "wrong")
    return pd.DataFrame(sub)


def write_competition(
    data_dir: Path, spec: CompetitionSpec, n: int = 300, seed: int = 0
) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    answers = make_answers(spec, n, rng)
    ans_path = data_dir / spec.competition_id / "prepared" / "private" / spec.answers
    ans_path.parent.mkdir(parents=True, exist_ok=True)
    answers.to_csv(ans_path, index=False)
    sub_path = data_dir / f"{spec.competition_id}-submission.csv"
    make_submission(spec, answers, rng).to_csv(sub_path, index=False)
    return ans_path, sub_path


# ---- upstream reference ------------------------------------------------------------------------
UPSTREAM_RUNNER = r"""
import importlib, json, sys, types
for name in ("yaml", "py7zr"):  # imported by mlebench.utils, unused by the graders
    sys.modules.setdefault(name, types.ModuleType(name))
from mlebench.utils import read_csv
out = {}
for cid, sub, ans in json.loads(sys.argv[1]):
    grade = importlib.import_module(f"mlebench.competitions.{cid}.grade").grade
    try:
        out[cid] = round(float(grade(read_csv(sub), read_csv(ans))), 5)
    except Exception as e:
        out[cid] = f"error: {type(e).__name__}: {e}"
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def upstream_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = os.environ.get("MLEBENCH_DIR")
    if env_dir and (Path(env_dir) / "mlebench" / "competitions").is_dir():
        return Path(env_dir)
    if not MIRROR.is_dir():
        pytest.skip("no upstream MLE-bench source (set MLEBENCH_DIR to a checkout)")
    dest = tmp_path_factory.mktemp("upstream")
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(MIRROR), "archive", "-o", str(archive), "HEAD", "mlebench"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def upstream_scores(src: Path, jobs: list[tuple[str, str, str]]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(
        [sys.executable, "-c", UPSTREAM_RUNNER, json.dumps(jobs)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- tests ----------------------------------------------------------------------------------------
def test_without_mlebench_the_builtin_backend_is_chosen(tmp_path: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("mlebench") is None  # the dev venv must not have upstream
    info = backend_info()
    assert info["backend"] == "builtin" and info["version"].startswith("mlebench-hpc")
    comp = load_competition("spaceship-titanic", tmp_path, need_answers=False)
    assert comp.backend == "builtin" and comp.backend_version == info["version"]


def test_registry_covers_the_lite_split() -> None:
    covered = {s.competition_id for s in UPSTREAM_SPECS}
    assert "spaceship-titanic" in covered
    for cid in LITE:
        assert (cid in covered) != (cid in SKIPPED), cid
    assert len(covered & set(LITE)) >= 20


def test_lite_list_matches_upstream_split() -> None:
    if not MIRROR.is_dir():
        pytest.skip("no local mirror of upstream")
    out = subprocess.run(
        ["git", "-C", str(MIRROR), "show", "HEAD:experiments/splits/low.txt"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert sorted(out.stdout.split()) == sorted(LITE)


def test_unknown_and_unprepared_are_one_line_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownCompetition) as e1:
        load_competition("no-such-competition", tmp_path)
    with pytest.raises(CompetitionNotPrepared) as e2:
        load_competition("spaceship-titanic", tmp_path)
    for err in (e1, e2):
        assert "\n" not in str(err.value)
    assert "mlebench prepare -c spaceship-titanic" in str(e2.value)


@pytest.mark.parametrize("spec", UPSTREAM_SPECS, ids=lambda s: s.competition_id)
def test_sample_like_submission_validates_and_scores(tmp_path: Path, spec: CompetitionSpec) -> None:
    _, sub_path = write_competition(tmp_path, spec)
    comp = load_competition(spec.competition_id, tmp_path)
    assert comp.validate(sub_path) == (True, "Submission is valid.")
    score = comp.score(sub_path)
    assert isinstance(score, float) and score == round(score, 5)
    assert comp.is_lower_better == spec.lower_is_better


def test_scores_equal_upstream_graders(tmp_path: Path, upstream_src: Path) -> None:
    jobs, ours = [], {}
    for i, spec in enumerate(UPSTREAM_SPECS):
        ans_path, sub_path = write_competition(tmp_path, spec, n=400, seed=100 + i)
        ours[spec.competition_id] = load_competition(spec.competition_id, tmp_path).score(sub_path)
        jobs.append((spec.competition_id, str(sub_path), str(ans_path)))
    theirs = upstream_scores(upstream_src, jobs)
    mismatches = {cid: (ours[cid], theirs[cid]) for cid in ours if ours[cid] != theirs[cid]}
    assert not mismatches, mismatches
