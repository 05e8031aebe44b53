"""The built-in competitions, loaded from data/competitions.json and validated on load.

Each entry names, with named fields: where the answers are, the id and target columns, the metric
and its direction, and which of upstream's grading procedures (procedures.py) reproduces the
competition's upstream grader, with upstream's column rule and unscored rows. A malformed entry is
a GradingSetupError that names the entry and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import GradingSetupError
from .procedures import COLUMN_RULES, PROCEDURES, UNSCORED_ROWS, Spec

SPECS_FILE = Path(__file__).resolve().parent.parent / "data" / "competitions.json"
DIRECTIONS = ("higher_is_better", "lower_is_better")
ORIGINS = ("upstream", "demo")


@dataclass(frozen=True)
class CompetitionSpec:
    competition_id: str
    origin: str  # "upstream" (MLE-bench) or "demo" (ours, made by `mlebench-hpc prepare-demo`)
    upstream_grader: str | None
    answers_file: str  # under DATA_DIR/<id>/prepared/private/
    sample_submission: str  # under DATA_DIR/<id>/prepared/public/
    id_column: str
    target_columns: tuple[str, ...]
    metric: str
    direction: str
    procedure: str
    column_rule: str
    unscored_rows: str

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower_is_better"

    def procedure_spec(self) -> Spec:
        return Spec(
            self.competition_id, self.id_column, self.target_columns, self.column_rule, self.unscored_rows
        )


_STR_FIELDS = ("competition_id", "origin", "answers_file", "sample_submission", "id_column", "metric",
               "direction", "procedure", "column_rule", "unscored_rows")  # fmt: skip
_CHOICES = {
    "origin": ORIGINS,
    "direction": DIRECTIONS,
    "procedure": tuple(PROCEDURES),
    "column_rule": COLUMN_RULES,
    "unscored_rows": UNSCORED_ROWS,
}


def parse_spec(entry: Any, where: str) -> CompetitionSpec:
    """One entry of competitions.json -> CompetitionSpec, or a one-line GradingSetupError."""
    if not isinstance(entry, dict):
        raise GradingSetupError(f"{where}: must be an object with named fields")
    name = entry.get("competition_id", "?")
    label = f"{where} ({name})"
    known = {*_STR_FIELDS, "upstream_grader", "target_columns"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise GradingSetupError(
            f"{label}: unknown fields {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    missing = sorted(known - set(entry))
    if missing:
        raise GradingSetupError(f"{label}: fields missing: {', '.join(missing)}")
    for f in _STR_FIELDS:
        if not isinstance(entry[f], str) or not entry[f]:
            raise GradingSetupError(f"{label}: field '{f}' must be a non-empty string")
    for f, choices in _CHOICES.items():
        if entry[f] not in choices:
            raise GradingSetupError(f"{label}: field '{f}' is '{entry[f]}'; one of {', '.join(choices)}")
    targets = entry["target_columns"]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise GradingSetupError(f"{label}: field 'target_columns' must be a non-empty list of column names")
    if len(set(targets)) != len(targets) or entry["id_column"] in targets:
        raise GradingSetupError(f"{label}: 'target_columns' repeat a name or contain the id column")
    metric = PROCEDURES[entry["procedure"]][1]
    if entry["metric"] != metric:
        raise GradingSetupError(
            f"{label}: procedure '{entry['procedure']}' computes '{metric}', not '{entry['metric']}'"
        )
    grader = entry["upstream_grader"]
    if (entry["origin"] == "upstream") != isinstance(grader, str):
        raise GradingSetupError(
            f"{label}: 'upstream_grader' is required for origin 'upstream' and null otherwise"
        )
    if Path(entry["answers_file"]).is_absolute() or ".." in Path(entry["answers_file"]).parts:
        raise GradingSetupError(f"{label}: 'answers_file' must be a plain name under prepared/private/")
    return CompetitionSpec(
        competition_id=entry["competition_id"], origin=entry["origin"], upstream_grader=grader,
        answers_file=entry["answers_file"], sample_submission=entry["sample_submission"],
        id_column=entry["id_column"], target_columns=tuple(targets), metric=entry["metric"],
        direction=entry["direction"], procedure=entry["procedure"], column_rule=entry["column_rule"],
        unscored_rows=entry["unscored_rows"],
    )  # fmt: skip


def parse_specs(doc: Any, source: str) -> dict[str, CompetitionSpec]:
    if not isinstance(doc, dict) or not isinstance(doc.get("competitions"), list):
        raise GradingSetupError(f"{source}: expected an object with a 'competitions' list")
    out: dict[str, CompetitionSpec] = {}
    for i, entry in enumerate(doc["competitions"]):
        spec = parse_spec(entry, f"{source}: competitions[{i}]")
        if spec.competition_id in out:
            raise GradingSetupError(f"{source}: competition {spec.competition_id} is listed twice")
        out[spec.competition_id] = spec
    return out


@cache
def specs() -> dict[str, CompetitionSpec]:
    try:
        doc = json.loads(SPECS_FILE.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise GradingSetupError(f"cannot read the competition specs {SPECS_FILE}: {e}") from None
    return parse_specs(doc, SPECS_FILE.name)


def get_spec(competition_id: str) -> CompetitionSpec | None:
    return specs().get(competition_id)


def demo_specs() -> list[CompetitionSpec]:
    return [s for s in specs().values() if s.origin == "demo"]


def upstream_specs() -> list[CompetitionSpec]:
    return [s for s in specs().values() if s.origin == "upstream"]
