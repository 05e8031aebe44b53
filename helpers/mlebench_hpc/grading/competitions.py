"""Declarative specs of the built-in competitions.

Each entry was read off upstream MLE-bench's `mlebench/competitions/<id>/{config.yaml,grade.py}`
(answers file, id column, target columns, metric, direction). Where upstream's graders are lax
(no id check, out-of-range values accepted, plain exceptions), ours are uniformly strict; see
validation.py for the checks and DESIGN.md "Grading fidelity" for why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class CompetitionSpec:
    competition_id: str
    answers: str  # path under DATA_DIR/<id>/prepared/private/
    id_column: str
    targets: tuple[str, ...]
    metric: str  # key of metrics.METRICS
    lower_is_better: bool
    # How target values are checked and read:
    #  "probability"  numbers in [0, 1]
    #  "simplex"      one probability column per class, each in [0, 1], rows summing to 1 (+-1e-6)
    #  "bool"         True/False (pandas' boolean spellings) or 0/1
    #  "int_label"    integers within `labels`
    #  "nonneg"       finite numbers >= 0
    #  "real"         finite numbers
    #  "text"         strings, read with keep_default_na=False
    kind: str
    labels: tuple[int, ...] = ()
    # Extra submission columns: upstream ignores them in most graders and rejects them in a few
    # (exact column set checks); we follow upstream per competition.
    extra_columns_ok: bool = True
    # Answer rows whose targets are all -1 are not scored (jigsaw: Kaggle's unused test rows).
    drop_answer_rows_all_minus_one: bool = False
    sample_submission: str = "sample_submission.csv"  # under prepared/public/
    note: str = ""


@cache
def _classes(competition_id: str) -> tuple[str, ...]:
    text = (Path(__file__).resolve().parent.parent / "data" / "competition_classes.json").read_text("utf-8")
    return tuple(json.loads(text)[competition_id])


def _spec(*args, **kwargs) -> CompetitionSpec:
    return CompetitionSpec(*args, **kwargs)


JIGSAW = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
PLANT = ("healthy", "multiple_diseases", "rust", "scab")
RANZCR = (
    "ETT - Abnormal", "ETT - Borderline", "ETT - Normal",
    "NGT - Abnormal", "NGT - Borderline", "NGT - Incompletely Imaged", "NGT - Normal",
    "CVC - Abnormal", "CVC - Borderline",
)  # fmt: skip
SPOOKY = ("EAP", "HPL", "MWS")


def _upstream_specs() -> list[CompetitionSpec]:
    auc = dict(metric="roc_auc", lower_is_better=False, kind="probability")
    return [
        _spec("spaceship-titanic", "test.csv", "PassengerId", ("Transported",), "accuracy", False, "bool"),
        _spec("aerial-cactus-identification", "test.csv", "id", ("has_cactus",), **auc),
        _spec(
            "aptos2019-blindness-detection",
            "test.csv",
            "id_code",
            ("diagnosis",),
            "quadratic_weighted_kappa",
            False,
            "int_label",
            labels=(0, 1, 2, 3, 4),
        ),  # fmt: skip
        _spec(
            "denoising-dirty-documents",
            "answers.csv",
            "id",
            ("value",),
            "rmse",
            True,
            "real",
            sample_submission="sampleSubmission.csv",
            note="pixel ids; upstream only checks that values parse as floats, so any finite number",
        ),  # fmt: skip
        _spec(
            "dog-breed-identification",
            "test.csv",
            "id",
            _classes("dog-breed-identification"),
            "log_loss",
            True,
            "simplex",
        ),  # fmt: skip
        _spec(
            "dogs-vs-cats-redux-kernels-edition",
            "answers.csv",
            "id",
            ("label",),
            "binary_log_loss",
            True,
            "probability",
        ),  # fmt: skip
        _spec("histopathologic-cancer-detection", "answers.csv", "id", ("label",), **auc),
        _spec(
            "jigsaw-toxic-comment-classification-challenge",
            "test.csv",
            "id",
            JIGSAW,
            "mean_columnwise_roc_auc",
            False,
            "probability",
            drop_answer_rows_all_minus_one=True,
            note="upstream scores the submission's own column order; we select the classes by name",
        ),  # fmt: skip
        _spec(
            "leaf-classification",
            "test.csv",
            "id",
            _classes("leaf-classification"),
            "log_loss",
            True,
            "simplex",
            extra_columns_ok=False,
        ),  # fmt: skip
        _spec("mlsp-2013-birds", "answers.csv", "Id", ("Probability",), **auc),
        _spec(
            "new-york-city-taxi-fare-prediction",
            "test.csv",
            "key",
            ("fare_amount",),
            "rmse",
            True,
            "nonneg",
            note="upstream sorts by key without checking it and accepts negative fares",
        ),  # fmt: skip
        _spec(
            "nomad2018-predict-transparent-conductors",
            "test.csv",
            "id",
            ("formation_energy_ev_natom", "bandgap_energy_ev"),
            "mean_columnwise_rmsle",
            True,
            "nonneg",
            note="upstream never compares ids and relies on row order",
        ),  # fmt: skip
        _spec(
            "plant-pathology-2020-fgvc7",
            "test.csv",
            "image_id",
            PLANT,
            "mean_columnwise_roc_auc",
            False,
            "probability",
            extra_columns_ok=False,
        ),  # fmt: skip
        _spec(
            "random-acts-of-pizza",
            "test.csv",
            "request_id",
            ("requester_received_pizza",),
            **auc,
            sample_submission="sampleSubmission.csv",
        ),  # fmt: skip
        _spec(
            "ranzcr-clip-catheter-line-classification",
            "test.csv",
            "StudyInstanceUID",
            RANZCR,
            "mean_columnwise_roc_auc",
            False,
            "probability",
        ),  # fmt: skip
        _spec("siim-isic-melanoma-classification", "test.csv", "image_name", ("target",), **auc),
        _spec(
            "spooky-author-identification",
            "test.csv",
            "id",
            SPOOKY,
            "log_loss",
            True,
            "simplex",
            extra_columns_ok=False,
        ),  # fmt: skip
        _spec(
            "tabular-playground-series-dec-2021",
            "test.csv",
            "Id",
            ("Cover_Type",),
            "accuracy",
            False,
            "int_label",
            labels=(1, 2, 3, 4, 5, 6, 7),
        ),  # fmt: skip
        _spec("tabular-playground-series-may-2022", "test.csv", "id", ("target",), **auc),
        _spec(
            "text-normalization-challenge-english-language",
            "answers.csv",
            "id",
            ("after",),
            "accuracy",
            False,
            "text",
            sample_submission="../private/sample_submission.csv",
        ),  # fmt: skip
        _spec(
            "text-normalization-challenge-russian-language",
            "answers.csv",
            "id",
            ("after",),
            "accuracy",
            False,
            "text",
            sample_submission="../private/sample_submission.csv",
        ),  # fmt: skip
        _spec(
            "the-icml-2013-whale-challenge-right-whale-redux",
            "test.csv",
            "clip",
            ("probability",),
            **auc,
            sample_submission="sampleSubmission.csv",
        ),  # fmt: skip
    ]


# Demo competitions made by `mlebench-hpc prepare-demo` from data sets scikit-learn ships.
DEMO_SPECS = [
    _spec("demo-breast-cancer", "test.csv", "id", ("target",), "roc_auc", False, "probability"),
    _spec("demo-diabetes", "test.csv", "id", ("target",), "rmse", True, "real"),
]

# Lite-split competitions not built in, and why (their grading is not a plain CSV comparison
# that we can reproduce exactly).
SKIPPED = {
    "detecting-insults-in-social-commentary": (
        "the id column is the comment text, which may repeat; upstream aligns duplicates by an "
        "unstable sort, so scores with repeated comments are not reproducible exactly"
    ),
}


@cache
def specs() -> dict[str, CompetitionSpec]:
    return {s.competition_id: s for s in _upstream_specs() + DEMO_SPECS}


def get_spec(competition_id: str) -> CompetitionSpec | None:
    return specs().get(competition_id)
