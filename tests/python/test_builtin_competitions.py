"""The built-in registry: which competitions it covers, how its specs are validated on load, and
that every upstream competition validates and scores its well-formed conformance case.

Equality with upstream's graders, case by case, is tests/conformance/test_conformance.py (vectors
made from upstream's own graders; nothing outside the checkout is needed).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from mlebench_hpc.grading import (
    CompetitionNotPrepared,
    GradingSetupError,
    UnknownCompetition,
    backend_info,
    load_competition,
)
from mlebench_hpc.grading.competitions import SPECS_FILE, CompetitionSpec, parse_specs, upstream_specs

VECTORS = Path(__file__).resolve().parents[1] / "conformance" / "vectors"
# upstream's experiments/splits/low.txt (the Lite split) at the commit the vectors name
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


@pytest.fixture(autouse=True)
def _builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEBENCH_HPC_BACKEND", "builtin")


def test_without_mlebench_the_builtin_backend_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    monkeypatch.delenv("MLEBENCH_HPC_BACKEND")
    assert importlib.util.find_spec("mlebench") is None  # the dev venv must not have upstream
    info = backend_info()
    assert info["backend"] == "builtin" and info["version"].startswith("mlebench-hpc")
    comp = load_competition("spaceship-titanic", tmp_path, need_answers=False)
    assert comp.backend == "builtin" and comp.backend_version == info["version"]


def test_registry_covers_the_lite_split_and_spaceship() -> None:
    covered = {s.competition_id for s in upstream_specs()}
    assert covered == {*LITE, "spaceship-titanic"}


def test_unknown_and_unprepared_are_one_line_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownCompetition) as e1:
        load_competition("no-such-competition", tmp_path)
    with pytest.raises(CompetitionNotPrepared) as e2:
        load_competition("spaceship-titanic", tmp_path)
    for err in (e1, e2):
        assert "\n" not in str(err.value)
    assert "mlebench prepare -c spaceship-titanic" in str(e2.value)


@pytest.mark.parametrize("spec", upstream_specs(), ids=lambda s: s.competition_id)
def test_well_formed_submission_validates_and_scores(tmp_path: Path, spec: CompetitionSpec) -> None:
    doc = json.loads((VECTORS / f"{spec.competition_id}.json").read_text("utf-8"))
    ans = tmp_path / spec.competition_id / "prepared" / "private" / spec.answers_file
    ans.parent.mkdir(parents=True)
    ans.write_text(doc["answers"], encoding="utf-8")
    case = next(c for c in doc["cases"] if c["name"] == "well_formed")
    sub = tmp_path / "submission.csv"
    sub.write_text(case["submission"], encoding="utf-8")
    comp = load_competition(spec.competition_id, tmp_path)
    assert comp.validate(sub) == (True, "Submission is valid.")
    score = comp.score(sub)
    assert isinstance(score, float) and score == round(score, 5) == case["upstream"]["score"]
    assert comp.is_lower_better == spec.lower_is_better


# ---- specs as data: validated on load ---------------------------------------------------------
def _doc() -> dict:
    return json.loads(SPECS_FILE.read_text("utf-8"))


def test_shipped_specs_parse_with_named_fields() -> None:
    specs = parse_specs(_doc(), "competitions.json")
    spooky = specs["spooky-author-identification"]
    assert spooky.direction == "lower_is_better" and spooky.lower_is_better
    assert spooky.column_rule == "four_columns_by_position" and spooky.target_columns == ("EAP", "HPL", "MWS")
    assert len(specs["dog-breed-identification"].target_columns) == 120
    assert len(specs["leaf-classification"].target_columns) == 99


@pytest.mark.parametrize(
    "change, words",
    [
        ({"direction": False}, "field 'direction' must be a non-empty string"),
        (
            {"direction": "smaller"},
            "field 'direction' is 'smaller'; one of higher_is_better, lower_is_better",
        ),
        ({"procedure": "guess"}, "field 'procedure' is 'guess'"),
        ({"metric": "rmse"}, "procedure 'accuracy_by_sorted_id' computes 'accuracy', not 'rmse'"),
        ({"target_columns": []}, "'target_columns' must be a non-empty list"),
        ({"target_columns": ["PassengerId"]}, "contain the id column"),
        ({"answers_file": "../../etc/passwd"}, "'answers_file' must be a plain name"),
        ({"upstream_grader": None}, "'upstream_grader' is required for origin 'upstream'"),
        ({"lower_is_better": True}, "unknown fields lower_is_better"),
    ],
)
def test_a_malformed_spec_is_a_one_line_error_naming_entry_and_field(change: dict, words: str) -> None:
    doc = _doc()
    entry = next(e for e in doc["competitions"] if e["competition_id"] == "spaceship-titanic")
    entry.update(change)
    with pytest.raises(GradingSetupError) as err:
        parse_specs(doc, "competitions.json")
    msg = str(err.value)
    assert words in msg and "(spaceship-titanic)" in msg and "\n" not in msg


def test_missing_field_and_duplicate_entry_are_refused() -> None:
    doc = _doc()
    del doc["competitions"][0]["id_column"]
    with pytest.raises(GradingSetupError, match="fields missing: id_column"):
        parse_specs(doc, "competitions.json")
    doc = _doc()
    doc["competitions"].append(copy.deepcopy(doc["competitions"][0]))
    with pytest.raises(GradingSetupError, match="listed twice"):
        parse_specs(doc, "competitions.json")
    with pytest.raises(GradingSetupError, match="'competitions' list"):
        parse_specs({"competitions": {}}, "competitions.json")
