"""Make the conformance vectors: upstream MLE-bench's own graders' verdicts on synthetic cases.

Run under a venv with upstream's pins (pandas 2.2, scikit-learn 1.5, numpy < 2), given the path of
an upstream source tree (nothing of upstream is copied here: its modules are imported from there):

    /path/to/upstream-venv/bin/python tests/conformance/generate.py --upstream /path/to/mle-bench

Per competition it builds seeded synthetic answers with the columns and dtypes of upstream's
prepared answers, a well-formed submission, and submissions malformed the ways agents fail; it
runs each through upstream's grader exactly as upstream's `grade_csv` does (`mlebench.utils.read_csv`
of the file, `load_answers` of the answers, the grader function of the competition's config.yaml,
`round(score, 5)`; any exception is "invalid") and writes tests/conformance/vectors/<id>.json.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
LITE_AND_SPACESHIP = [
    "spaceship-titanic",
    "aerial-cactus-identification",
    "aptos2019-blindness-detection",
    "denoising-dirty-documents",
    "detecting-insults-in-social-commentary",
    "dog-breed-identification",
    "dogs-vs-cats-redux-kernels-edition",
    "histopathologic-cancer-detection",
    "jigsaw-toxic-comment-classification-challenge",
    "leaf-classification",
    "mlsp-2013-birds",
    "new-york-city-taxi-fare-prediction",
    "nomad2018-predict-transparent-conductors",
    "plant-pathology-2020-fgvc7",
    "random-acts-of-pizza",
    "ranzcr-clip-catheter-line-classification",
    "siim-isic-melanoma-classification",
    "spooky-author-identification",
    "tabular-playground-series-dec-2021",
    "tabular-playground-series-may-2022",
    "text-normalization-challenge-english-language",
    "text-normalization-challenge-russian-language",
    "the-icml-2013-whale-challenge-right-whale-redux",
]


@dataclass
class Schema:
    """What a submission of a competition looks like, for the generic malformations."""

    id_column: str
    targets: list[str]
    kind: str  # prob | label | bool | real | nonneg | text | onehot
    labels: list = field(default_factory=list)


# ---------------------------------------------------------------------------------- answers
def hexid(rng: np.random.Generator, n: int, width: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(list("0123456789abcdef"), width)))
    ids = sorted(out)  # a set's order varies with PYTHONHASHSEED: sort, then shuffle by the seed
    return [ids[i] for i in rng.permutation(len(ids))]


def binary(rng: np.random.Generator, n: int) -> np.ndarray:
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = [0, 1]  # both classes present
    return y


def onehot(rng: np.random.Generator, n: int, classes: list[str]) -> pd.DataFrame:
    pick = rng.integers(0, len(classes), n)
    return pd.DataFrame({c: (pick == j).astype(int) for j, c in enumerate(classes)})


def upstream_list(module: str, name: str) -> list[str]:
    return list(getattr(importlib.import_module(f"mlebench.competitions.{module}"), name))


def make_answers(cid: str, rng: np.random.Generator) -> tuple[pd.DataFrame, Schema]:
    n = 40
    if cid == "spaceship-titanic":
        groups, members = rng.choice(9000, n, replace=False), rng.integers(1, 4, n)
        ids = [f"{g:04d}_{m:02d}" for g, m in zip(groups, members, strict=True)]
        df = pd.DataFrame(
            {
                "PassengerId": ids,
                "HomePlanet": rng.choice(["Earth", "Europa", "Mars", None], n),
                "CryoSleep": rng.choice([True, False, None], n),
                "Age": np.round(rng.random(n) * 70, 0),
                "Transported": rng.random(n) < 0.5,
            }
        )
        return df, Schema("PassengerId", ["Transported"], "bool")
    if cid in ("aerial-cactus-identification",):
        df = pd.DataFrame({"id": [f"{h}.jpg" for h in hexid(rng, n, 32)], "has_cactus": binary(rng, n)})
        return df, Schema("id", ["has_cactus"], "prob")
    if cid == "aptos2019-blindness-detection":
        df = pd.DataFrame({"id_code": hexid(rng, n, 12), "diagnosis": rng.integers(0, 5, n)})
        return df, Schema("id_code", ["diagnosis"], "label", [0, 1, 2, 3, 4])
    if cid == "denoising-dirty-documents":
        ids = [f"{img}_{r}_{c}" for img in (1, 12) for r in range(1, 6) for c in range(1, 5)]
        df = pd.DataFrame({"id": ids, "value": np.round(rng.random(len(ids)), 4)})
        return df, Schema("id", ["value"], "real")
    if cid == "detecting-insults-in-social-commentary":
        words = ["you", "are", "a", "total", "idiot", "nice", "point", "\\xa0", "lol", "thanks", "ha"]
        comments = ['"' + " ".join(rng.choice(words, rng.integers(1, 6))) + '"' for _ in range(n - 10)] + [
            '"thank you"',
            '"thank you"',
            '"you idiot"',
            '"you idiot"',
            '"you idiot"',
            '"lol"',
            '"lol"',
            '"ok"',
            '"ok"',
            '"ok"',
        ]
        order = rng.permutation(n)
        comments = [comments[i] for i in order]
        insult = binary(rng, n)
        dates = [None if rng.random() < 0.2 else f"2012{rng.integers(1, 13):02d}15120000Z" for _ in range(n)]
        df = pd.DataFrame({"Insult": insult, "Date": dates, "Comment": comments, "Usage": "PrivateTest"})
        return df, Schema("Comment", ["Insult"], "prob")
    if cid == "dog-breed-identification":
        classes = upstream_list("dog-breed-identification.dogs", "DOGS_LIST")
        df = pd.concat([pd.DataFrame({"id": hexid(rng, 10, 32)}), onehot(rng, 10, classes)], axis=1)
        return df, Schema("id", classes, "onehot")
    if cid == "dogs-vs-cats-redux-kernels-edition":
        df = pd.DataFrame({"id": np.arange(1, n + 1), "label": binary(rng, n)})
        return df, Schema("id", ["label"], "prob")
    if cid == "histopathologic-cancer-detection":
        df = pd.DataFrame({"id": hexid(rng, n, 40), "label": binary(rng, n)})
        return df, Schema("id", ["label"], "prob")
    if cid == "jigsaw-toxic-comment-classification-challenge":
        classes = upstream_list("jigsaw-toxic-comment-classification-challenge.classes", "CLASSES")
        df = pd.DataFrame({"id": hexid(rng, n, 16)})
        for j, c in enumerate(classes):
            y = binary(rng, n)
            y[2 + j] = 1 - y[2 + j]
            df[c] = y
        df.loc[df.index[-6:], classes] = -1  # Kaggle's unscored rows
        return df, Schema("id", classes, "prob")
    if cid == "leaf-classification":
        classes = upstream_list("leaf-classification.classes", "CLASSES")
        ids = np.sort(rng.choice(1500, 10, replace=False)) + 1
        df = pd.concat([pd.DataFrame({"id": ids}), onehot(rng, 10, classes)], axis=1)
        return df, Schema("id", classes, "onehot")
    if cid == "mlsp-2013-birds":
        ids = [rec * 100 + sp for rec in rng.choice(300, 3, replace=False) for sp in range(19)]
        df = pd.DataFrame({"Id": ids, "Probability": binary(rng, len(ids))})
        return df, Schema("Id", ["Probability"], "prob")
    if cid == "new-york-city-taxi-fare-prediction":
        keys = [
            f"2015-0{rng.integers(1, 7)}-{rng.integers(10, 28)} 1{rng.integers(0, 9)}:0{rng.integers(0, 9)}:"
            f"{rng.integers(10, 59)}.000000{i % 7 + 1}"
            for i in range(n)
        ]
        df = pd.DataFrame(
            {
                "key": keys,
                "fare_amount": np.round(rng.random(n) * 40 + 2.5, 2),
                "pickup_datetime": [k[:19] + " UTC" for k in keys],
                "pickup_longitude": np.round(-73.9 - rng.random(n) / 10, 6),
                "pickup_latitude": np.round(40.7 + rng.random(n) / 10, 6),
                "dropoff_longitude": np.round(-73.9 - rng.random(n) / 10, 6),
                "dropoff_latitude": np.round(40.7 + rng.random(n) / 10, 6),
                "passenger_count": rng.integers(1, 5, n),
            }
        )
        return df, Schema("key", ["fare_amount"], "nonneg")
    if cid == "nomad2018-predict-transparent-conductors":
        df = pd.DataFrame(
            {
                "id": np.arange(1, n + 1),
                "spacegroup": rng.choice([12, 33, 167, 206], n),
                "number_of_total_atoms": rng.choice([10.0, 20.0, 40.0, 80.0], n),
                "percent_atom_al": np.round(rng.random(n), 4),
                "formation_energy_ev_natom": np.round(rng.random(n) * 0.5, 4),
                "bandgap_energy_ev": np.round(rng.random(n) * 5, 4),
            }
        )
        return df, Schema("id", ["formation_energy_ev_natom", "bandgap_energy_ev"], "nonneg")
    if cid == "plant-pathology-2020-fgvc7":
        classes = ["healthy", "multiple_diseases", "rust", "scab"]
        oh = onehot(rng, n, classes)
        oh.iloc[:4] = np.eye(4, dtype=int)
        df = pd.concat([pd.DataFrame({"image_id": [f"Test_{i}" for i in rng.permutation(n)]}), oh], axis=1)
        return df, Schema("image_id", classes, "prob")
    if cid == "random-acts-of-pizza":
        df = pd.DataFrame(
            {
                "request_id": [f"t3_{h}" for h in hexid(rng, n, 5)],
                "requester_received_pizza": binary(rng, n).astype(bool),
            }
        )
        return df, Schema("request_id", ["requester_received_pizza"], "prob")
    if cid == "ranzcr-clip-catheter-line-classification":
        classes = upstream_list("ranzcr-clip-catheter-line-classification.classes", "CLASSES")
        uids = [f"1.2.826.0.1.3680043.8.498.{x}" for x in rng.choice(10**11, n, replace=False)]
        df = pd.DataFrame({"StudyInstanceUID": uids})
        for c in classes:
            df[c] = binary(rng, n)
        df["Swan Ganz Catheter Present"] = 0
        df["PatientID"] = [f"ec{h}" for h in hexid(rng, n, 7)]
        return df, Schema("StudyInstanceUID", classes, "prob")
    if cid == "siim-isic-melanoma-classification":
        df = pd.DataFrame(
            {
                "image_name": [f"ISIC_{x:07d}" for x in rng.choice(10**6, n, replace=False)],
                "patient_id": [f"IP_{x:07d}" for x in rng.integers(0, 10**6, n)],
                "sex": rng.choice(["male", "female", None], n),
                "age_approx": rng.choice([35.0, 50.0, np.nan], n),
                "anatom_site_general_challenge": rng.choice(["torso", "head/neck"], n),
                "diagnosis": "unknown",
                "benign_malignant": "benign",
                "target": binary(rng, n),
            }
        )
        return df, Schema("image_name", ["target"], "prob")
    if cid == "spooky-author-identification":
        classes = ["EAP", "HPL", "MWS"]
        df = pd.concat(
            [
                pd.DataFrame({"id": [f"id{x:05d}" for x in rng.choice(10**5, n, replace=False)]}),
                onehot(rng, n, classes),
            ],
            axis=1,
        )
        return df, Schema("id", classes, "onehot")
    if cid == "tabular-playground-series-dec-2021":
        df = pd.DataFrame(
            {
                "Id": rng.choice(10**6, n, replace=False),
                "Elevation": rng.integers(2000, 3500, n),
                "Cover_Type": rng.integers(1, 8, n),
            }
        )
        return df, Schema("Id", ["Cover_Type"], "label", [1, 2, 3, 4, 5, 6, 7])
    if cid == "tabular-playground-series-may-2022":
        df = pd.DataFrame(
            {
                "id": rng.choice(10**6, n, replace=False),
                "f_00": np.round(rng.normal(size=n), 6),
                "f_27": ["".join(rng.choice(list("ABCDE"), 10)) for _ in range(n)],
                "target": binary(rng, n),
            }
        )
        return df, Schema("id", ["target"], "prob")
    if cid.startswith("text-normalization-challenge"):
        if cid.endswith("english-language"):
            words = [
                "the",
                "sil",
                "twenty",
                "one",
                "hundred",
                "Mr.",
                "mister",
                "a",
                "b",
                "c",
                "1",
                "12",
                "null",
                "NaN",
                "N/A",
                "NA",
                "nan",
                "",
                "None",
                "n/a",
                "#N/A",
                "-",
                "'",
                "1.0",
            ]
        else:
            words = ["в", "и", "двадцать", "один", "sil", "null", "NaN", "NA", "", "1", "м", "км", "n/a"]
        ids = [f"{s}_{t}" for s in range(5) for t in range(8)]
        after = [str(rng.choice(words)) for _ in ids]
        after[:6] = ["null", "NaN", "", "N/A", "1", "sil"]
        df = pd.DataFrame({"id": ids, "after": after})
        return df, Schema("id", ["after"], "text", words)
    if cid == "the-icml-2013-whale-challenge-right-whale-redux":
        clips = [
            f"20090404_{x:06d}_{x % 60:03d}s{x % 10}ms_Test{i}.aif"
            for i, x in enumerate(rng.choice(10**6, n, replace=False))
        ]
        df = pd.DataFrame({"clip": clips, "probability": binary(rng, n)})
        return df, Schema("clip", ["probability"], "prob")
    raise click.ClickException(f"no synthetic answers for {cid}")


# ------------------------------------------------------------------------------ submissions
def good_predictions(answers: pd.DataFrame, schema: Schema, rng: np.random.Generator) -> pd.DataFrame:
    n = len(answers)
    sub = pd.DataFrame({schema.id_column: answers[schema.id_column].to_numpy()})
    if schema.kind == "prob":
        for c in schema.targets:
            truth = answers[c].to_numpy().astype(float)
            noisy = np.clip(0.35 * truth + 0.65 * rng.random(n), 0, 1)
            sub[c] = np.round(noisy, 4)
    elif schema.kind == "onehot":
        # multiples of 1/200 that sum to one exactly in decimal: short text, rows normalized
        k = len(schema.targets)
        q = 0.5 * rng.dirichlet(np.full(k, 0.3), n) + 0.5 * answers[schema.targets].to_numpy()
        p = np.array([rng.multinomial(200, row / row.sum()) for row in q]) / 200
        for j, c in enumerate(schema.targets):
            sub[c] = p[:, j]
    elif schema.kind == "label":
        truth = answers[schema.targets[0]].to_numpy()
        sub[schema.targets[0]] = np.where(rng.random(n) < 0.6, truth, rng.choice(schema.labels, n))
    elif schema.kind == "bool":
        truth = answers[schema.targets[0]].to_numpy()
        sub[schema.targets[0]] = np.where(rng.random(n) < 0.7, truth, ~truth)
    elif schema.kind in ("real", "nonneg"):
        for c in schema.targets:
            truth = answers[c].to_numpy().astype(float)
            sub[c] = np.round(np.abs(truth * (1 + 0.3 * rng.normal(size=n))), 4)
    elif schema.kind == "text":
        truth = answers[schema.targets[0]].to_numpy()
        sub[schema.targets[0]] = [t if rng.random() < 0.7 else str(rng.choice(schema.labels)) for t in truth]
    if schema.id_column == "Comment":  # the insults sample submission's layout: Insult, Date, Comment
        sub = pd.DataFrame({"Insult": sub["Insult"], "Date": answers["Date"], "Comment": sub["Comment"]})
    return sub


def to_csv(df: pd.DataFrame, **kwargs) -> str:
    return df.to_csv(index=False, lineterminator="\n", **kwargs)


def set_cell(df: pd.DataFrame, row: int, col: str, value: object) -> pd.DataFrame:
    out = df.astype({col: object}).copy()
    out.iloc[row, out.columns.get_loc(col)] = value
    return out


def cases_for(answers: pd.DataFrame, schema: Schema, rng: np.random.Generator) -> list[tuple[str, str]]:
    idc, tgt, t0 = schema.id_column, schema.targets, schema.targets[0]
    good = good_predictions(answers, schema, rng)
    n = len(good)
    perm = rng.permutation(n)
    cases: list[tuple[str, str]] = []

    def add(name: str, df_or_text: pd.DataFrame | str) -> None:
        cases.append((name, df_or_text if isinstance(df_or_text, str) else to_csv(df_or_text)))

    text = to_csv(good)
    add("well_formed", text)
    add("shuffled_rows", good.iloc[perm])
    add("reversed_rows", good.iloc[::-1])
    add("perfect", good.assign(**{c: answers[c].to_numpy() for c in tgt}))
    add("extra_column", good.assign(extra=1))
    add("extra_text_column", good.assign(note="x"))
    add("columns_reordered", good[[*tgt, idc, *[c for c in good.columns if c not in (idc, *tgt)]]])
    add("id_last", good[[c for c in good.columns if c != idc] + [idc]])
    add("index_column", good.to_csv(lineterminator="\n"))  # pandas' default index=True
    add("missing_id_column", good.drop(columns=[idc]))
    add("missing_target_column", good.drop(columns=[t0]))
    add(
        "id_column_renamed_case",
        good.rename(columns={idc: idc.upper() if idc != idc.upper() else idc.lower()}),
    )
    add("missing_row", good.iloc[:-1])
    add("missing_first_row", good.iloc[1:])
    extra = good.iloc[[0]].copy()
    add("duplicate_row", pd.concat([good, extra]))
    add("duplicate_id_same_length", set_cell(good, n - 1, idc, good[idc].iloc[0]))
    add(
        "duplicate_id_swapped", set_cell(set_cell(good, 0, idc, good[idc].iloc[1]), 1, idc, good[idc].iloc[0])
    )
    unknown = "zz_unknown" if good[idc].dtype == object else int(good[idc].max()) + 10**6
    add("unknown_id", set_cell(good, 0, idc, unknown))
    add("extra_row_unknown_id", pd.concat([good, set_cell(good.iloc[[0]], 0, idc, unknown)]))
    add("empty_id", set_cell(good, 3, idc, None))
    add("nan_prediction", set_cell(good, 2, t0, None))
    add("nan_token_prediction", set_cell(good, 2, t0, "NaN"))
    add("all_predictions_nan", good.assign(**{t0: None}))
    add("string_prediction", set_cell(good, 1, t0, "abc"))
    add("bool_predictions", good.assign(**{t0: np.arange(n) % 2 == 0}))
    add("int_predictions", good.assign(**{t0: np.arange(n) % 2}))
    add("constant_predictions", good.assign(**{c: good[c].iloc[0] for c in tgt}))
    add("inf_prediction", set_cell(good, 0, t0, "inf"))
    add("negative_prediction", set_cell(good, 0, t0, -0.25))
    add("above_one_prediction", set_cell(good, 0, t0, 1.5))
    add("large_prediction", set_cell(good, 0, t0, 1e6))
    add("minus_one_rows", good.assign(**{c: np.where(np.arange(n) >= n - 6, -1, good[c]) for c in tgt}))
    add("bom", "\ufeff" + text)
    add("crlf", text.replace("\n", "\r\n"))
    add("quote_all", good.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_ALL))
    add("quoted_header_only", text.replace(f"{idc}", f'"{idc}"', 1))
    add("whitespace_padded", text.replace(",", ", "))
    add("semicolon_separated", good.to_csv(index=False, lineterminator="\n", sep=";"))
    add("tab_separated", good.to_csv(index=False, lineterminator="\n", sep="\t"))
    add("trailing_comma", text.replace("\n", ",\n"))
    add(
        "trailing_comma_rows_only",
        text.split("\n", 1)[0] + "\n" + text.split("\n", 1)[1].replace("\n", ",\n"),
    )
    add("no_trailing_newline", text.rstrip("\n"))
    add("blank_lines", text.replace("\n", "\n\n", 3))
    add("empty_file", "")
    add("header_only", text.split("\n", 1)[0] + "\n")
    add("no_header", text.split("\n", 1)[1])
    add("only_newline", "\n")
    add("scientific_notation", good.to_csv(index=False, lineterminator="\n", float_format="%.6e"))
    add("many_decimals", good.to_csv(index=False, lineterminator="\n", float_format="%.17g"))
    add("short_row", text.replace("\n", "\n" + str(good[idc].iloc[0]) + "\n", 1))
    add("long_row", text.replace("\n", "\n" + ",".join(["1"] * (good.shape[1] + 2)) + "\n", 1))
    add("duplicate_column_name", good.assign(dup=good[t0]).rename(columns={"dup": t0}))
    add("header_case_all_upper", good.rename(columns=str.upper))
    add("header_with_spaces", good.rename(columns=lambda c: f" {c} "))
    if pd.api.types.is_integer_dtype(good[idc]):
        add("float_ids", good.assign(**{idc: good[idc].astype(float)}))
        add("string_prefixed_ids", good.assign(**{idc: "id" + good[idc].astype(str)}))
        add("zero_padded_ids", good.assign(**{idc: good[idc].map(lambda v: f"{v:08d}")}))
    else:
        add("ids_upper_case", good.assign(**{idc: good[idc].astype(str).str.upper()}))
        add("ids_with_spaces", good.assign(**{idc: " " + good[idc].astype(str)}))
        add("ids_as_numbers", good.assign(**{idc: np.arange(n)}))
    if schema.kind in ("prob", "onehot"):
        add("probabilities_as_percent", good.assign(**{c: good[c] * 100 for c in tgt}))
        add("tiny_probabilities", good.assign(**{c: 1e-20 for c in tgt}))
        add("zero_and_one", good.assign(**{c: (good[c] > 0.5).astype(int) for c in tgt}))
        add("ties", good.assign(**{c: np.round(good[c], 1) for c in tgt}))
        add("yes_no_strings", good.assign(**{t0: np.where(good[t0] > 0.5, "yes", "no")}))
    if len(tgt) > 1:
        rot = tgt[1:] + tgt[:1]
        add("class_columns_permuted", good[[idc, *rot]])
        add("class_values_permuted", good.rename(columns=dict(zip(tgt, rot, strict=True)))[[idc, *tgt]])
        add("missing_one_class", good.drop(columns=[tgt[-1]]))
        add("extra_class_column", good.assign(unknown_class=0.0))
    if schema.kind == "onehot":
        p = good[tgt].to_numpy()
        add("unnormalized_rows", good.assign(**{c: p[:, j] * 0.9 for j, c in enumerate(tgt)}))
        add("one_row_unnormalized", set_cell(good, 0, tgt[0], float(good[tgt[0]].iloc[0]) + 0.2))
        add("sum_off_by_1e-7", set_cell(good, 0, tgt[0], float(good[tgt[0]].iloc[0]) + 1e-7))
        add("sum_off_by_1e-5", set_cell(good, 0, tgt[0], float(good[tgt[0]].iloc[0]) + 1e-5))
        add("single_label_column", pd.DataFrame({idc: good[idc], "label": [tgt[0]] * n}))
        add("logits", good.assign(**{c: good[c] * 5 - 2 for c in tgt}))
        add("uniform", good.assign(**{c: 1 / len(tgt) for c in tgt}))
    if schema.kind == "label":
        add("float_labels", good.assign(**{t0: good[t0].astype(float)}))
        add("non_integer_labels", set_cell(good, 0, t0, 2.5))
        add("out_of_range_label", set_cell(good, 0, t0, max(schema.labels) + 3))
        add("negative_label", set_cell(good, 0, t0, -1))
        add("zero_label", set_cell(good, 0, t0, 0))
        add("string_labels", good.assign(**{t0: "class_" + good[t0].astype(str)}))
        add("all_one_label", good.assign(**{t0: schema.labels[0]}))
    if schema.kind == "bool":
        add("bool_as_int", good.assign(**{t0: good[t0].astype(int)}))
        add("bool_lowercase", text.replace("True", "true").replace("False", "false"))
        add("bool_upper", text.replace("True", "TRUE").replace("False", "FALSE"))
        add("bool_yes_no", good.assign(**{t0: np.where(good[t0], "yes", "no")}))
        add("bool_junk_label", set_cell(good, 0, t0, "maybe"))
        add("bool_as_probability", good.assign(**{t0: np.where(good[t0], 0.9, 0.1)}))
        add("bool_as_float", good.assign(**{t0: good[t0].astype(float)}))
        add("bool_t_f", good.assign(**{t0: np.where(good[t0], "T", "F")}))
    if schema.kind in ("real", "nonneg"):
        add("negative_values", good.assign(**{c: good[c] - 1.0 for c in tgt}))
        add("ints", good.assign(**{c: np.round(good[c]).astype(int) for c in tgt}))
        add("huge_values", good.assign(**{c: good[c] * 1e10 for c in tgt}))
    if schema.kind == "text":
        add("nan_tokens_everywhere", good.assign(**{t0: "NaN"}))
        add("null_tokens_everywhere", good.assign(**{t0: "null"}))
        add("empty_strings", good.assign(**{t0: ""}))
        add(
            "perfect_but_nan_tokens_changed",
            good.assign(**{t0: answers[t0].replace({"null": "NaN", "NaN": "null", "N/A": "n/a"}).to_numpy()}),
        )
        add("case_changed", good.assign(**{t0: good[t0].astype(str).str.upper()}))
        add("numbers_as_text", good.assign(**{t0: [str(i) for i in range(n)]}))
        add("numbers_with_nan", set_cell(good.assign(**{t0: [str(i) for i in range(n)]}), 0, t0, None))
        add("quoted_text", good.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC))
    return cases


def special_cases(
    cid: str, answers: pd.DataFrame, schema: Schema, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Malformations that matter for one competition's grader."""
    good = good_predictions(answers, schema, rng)
    out: list[tuple[str, str]] = []
    if cid == "jigsaw-toxic-comment-classification-challenge":
        keep = answers[schema.targets].sum(axis=1) >= 0
        sub = good.copy()
        sub.loc[~keep.to_numpy(), schema.targets] = -1
        out.append(("minus_one_in_unscored_rows", to_csv(sub)))
        sub = good.copy()
        sub.loc[~keep.to_numpy(), schema.targets] = 5.0
        out.append(("out_of_range_in_unscored_rows", to_csv(sub)))
        sub = set_cell(good, len(good) - 1, "id", good["id"].iloc[len(good) - 2])
        out.append(("duplicate_id_of_unscored_row", to_csv(sub)))
        sub = set_cell(good, 0, "id", good["id"].iloc[1])
        out.append(("duplicate_id_of_scored_row", to_csv(sub)))
    if cid == "new-york-city-taxi-fare-prediction":
        out.append(("keys_all_equal", to_csv(good.assign(key=good["key"].iloc[0]))))
        out.append(("keys_unknown", to_csv(good.assign(key=[f"k{i:03d}" for i in range(len(good))]))))
    if cid == "nomad2018-predict-transparent-conductors":
        out.append(("ids_renumbered", to_csv(good.assign(id=np.arange(len(good)) + 1000))))
        out.append(("no_id_column_at_all", to_csv(good.drop(columns=["id"]))))
    if cid == "detecting-insults-in-social-commentary":
        for k in range(12):  # many row orders: duplicate comments pair by upstream's unstable sort
            out.append((f"shuffled_rows_{k}", to_csv(good.iloc[rng.permutation(len(good))])))
        out.append(("no_date_column", to_csv(good.drop(columns=["Date"]))))
        out.append(("comment_only_probabilities", to_csv(good[["Comment", "Insult"]])))
    if cid == "spooky-author-identification":
        out.append(
            ("renamed_class_columns", to_csv(good.rename(columns={"EAP": "A", "HPL": "B", "MWS": "C"})))
        )
    if cid == "spaceship-titanic":
        out.append(
            (
                "bool_mixed_spellings",
                to_csv(good.assign(Transported=np.where(np.arange(len(good)) % 2, "True", "false"))),
            )
        )
    return out


# ----------------------------------------------------------------------------------- grading
def run_upstream(cid: str, grade_fn: Callable, grader, sub_path: Path, ans_path: Path) -> dict:
    from mlebench.utils import load_answers, read_csv

    def attempt() -> tuple[object, str | None]:
        try:
            return grade_fn(read_csv(sub_path), load_answers(ans_path)), None
        except Exception as e:  # noqa: BLE001 - any exception is upstream's "invalid"
            return None, type(e).__name__

    raw, error = attempt()
    value = grader(read_csv(sub_path), load_answers(ans_path))  # upstream's Grader: round(score, 5)
    if (value is None) != (error is not None):
        raise click.ClickException(f"{cid}: grader and grade_fn disagree ({error}, {value})")
    if value is None:
        return {"valid": False, "score": None, "error": error}
    value = float(value)
    if math.isnan(value):
        return {"valid": True, "score": None, "score_is_nan": True}
    return {"valid": True, "score": value, "raw_score": float(raw)}


def medal_vectors(grader, upstream: Path, cid: str, leaderboards: Path) -> dict:
    """Upstream's Grader.rank_score and is_lower_better on the competition's real leaderboard, whose
    sha256 must equal the oid in upstream's Git LFS pointer."""
    import hashlib

    pointer = (upstream / "mlebench" / "competitions" / cid / "leaderboard.csv").read_text()
    oid = next(line.split(":", 1)[1] for line in pointer.splitlines() if line.startswith("oid sha256:"))
    path = leaderboards / cid / "leaderboard.csv"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != oid:
        raise click.ClickException(f"{path}: sha256 {digest} is not upstream's oid {oid}")
    board = pd.read_csv(path)  # upstream's get_leaderboard
    base = grader.rank_score(None, board)
    th = [base[k] for k in ("gold_threshold", "silver_threshold", "bronze_threshold", "median_threshold")]
    probes = sorted({v + d for v in th for d in (-1e-4, 0.0, 1e-4)} | {float(board["score"].iloc[0]) + 1})
    keys = ("gold_medal", "silver_medal", "bronze_medal", "above_median")
    return {
        "leaderboard_sha256": digest,
        "n_teams": len(board),
        "is_lower_better": grader.is_lower_better(board),
        "thresholds": {k: float(base[k]) for k in base if k.endswith("_threshold")},
        "probes": [{"score": s, **{k: bool(grader.rank_score(s, board)[k]) for k in keys}} for s in probes],
    }


@click.command()
@click.option(
    "--upstream",
    "upstream",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="an upstream MLE-bench source tree (openai/mle-bench)",
)
@click.option("--commit", default="", help="the upstream commit of that tree, recorded in the vectors")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE / "vectors")
@click.option("--competition", "only", multiple=True, help="only these competitions (default: all 23)")
@click.option("--seed", default=20260301, show_default=True)
@click.option(
    "--leaderboards",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a folder of <competition>/leaderboard.csv, upstream's LFS objects (checked by sha256)",
)
def main(
    upstream: Path, commit: str, out: Path, only: tuple[str, ...], seed: int, leaderboards: Path | None
) -> None:
    """Write tests/conformance/vectors/<competition>.json from upstream's graders."""
    import sklearn
    import yaml

    sys.path.insert(0, str(upstream.resolve()))
    from mlebench.grade_helpers import Grader

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.CRITICAL)  # upstream's Grader logs every invalid submission
    out.mkdir(parents=True, exist_ok=True)
    versions = {
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
    for k, cid in enumerate(only or LITE_AND_SPACESHIP):
        rng = np.random.default_rng(seed + k)
        config = yaml.safe_load((upstream / "mlebench" / "competitions" / cid / "config.yaml").read_text())
        grader = Grader.from_dict(config["grader"])
        answers_name = Path(config["dataset"]["answers"]).name
        answers, schema = make_answers(cid, rng)
        answers_text = to_csv(answers)
        cases = cases_for(answers, schema, rng) + special_cases(cid, answers, schema, rng)
        records = []
        with tempfile.TemporaryDirectory() as tmp:
            ans_path = Path(tmp) / answers_name
            ans_path.write_text(answers_text, encoding="utf-8", newline="")
            for name, sub_text in cases:
                sub_path = Path(tmp) / "submission.csv"
                sub_path.write_bytes(sub_text.encode("utf-8"))
                result = run_upstream(cid, grader.grade_fn, grader, sub_path, ans_path)
                records.append({"name": name, "submission": sub_text, "upstream": result})
        names = [r["name"] for r in records]
        assert len(set(names)) == len(names), f"{cid}: case names repeat"
        doc = {
            "competition_id": cid,
            "upstream_commit": commit,
            "generated_with": versions,
            "grade_fn": config["grader"]["grade_fn"],
            "answers_file": answers_name,
            "answers": answers_text,
            "cases": records,
        }
        if leaderboards is not None:
            doc["medals"] = medal_vectors(grader, upstream, cid, leaderboards)
        buf = io.StringIO()
        json.dump(doc, buf, ensure_ascii=False, indent=1)
        (out / f"{cid}.json").write_text(buf.getvalue() + "\n", encoding="utf-8")
        n_valid = sum(r["upstream"]["valid"] for r in records)
        click.echo(f"{cid}: {len(records)} cases, {n_valid} scored by upstream")


if __name__ == "__main__":
    main()
