"""`mlebench-hpc prepare-demo`: small competitions in upstream's layout from data sets that
scikit-learn ships (no download, no Kaggle), with leaderboards of simple baseline models.

scikit-learn is only needed here, on the host; the grading image never imports this module.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from mlebench_hpc.atomic import write_atomic
from mlebench_hpc.grading import metrics

SEED = 20240917  # fixed: the split and every baseline are reproducible
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class DemoDataset:
    competition_id: str
    loader: str  # name of the sklearn.datasets function
    task: str  # "binary" | "regression"
    metric_name: str
    summary: str


DEMOS = (
    DemoDataset(
        "demo-breast-cancer",
        "load_breast_cancer",
        "binary",
        "ROC AUC (higher is better)",
        "Predict whether a breast mass is malignant (target 0) or benign (target 1) from 30 features "
        "computed from a digitized image of a fine needle aspirate (Wisconsin Diagnostic Breast Cancer).",
    ),
    DemoDataset(
        "demo-diabetes",
        "load_diabetes",
        "regression",
        "RMSE (lower is better)",
        "Predict a quantitative measure of diabetes progression one year after baseline from age, sex, "
        "body mass index, average blood pressure and six blood serum measurements (Efron et al., 2004).",
    ),
)


def _sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "prepare-demo needs scikit-learn on this host: pip install scikit-learn (or `make install`)"
        ) from None
    import sklearn.datasets

    return sklearn


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(SEED).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _baselines(task: str) -> list[tuple[str, Callable[[], Any]]]:
    """(name, factory) of simple models; factories so each fit starts fresh."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    def scaled(model: Any) -> Any:
        return make_pipeline(StandardScaler(), model)

    out: list[tuple[str, Callable[[], Any]]] = []
    if task == "binary":
        out.append(("constant prior", lambda: DummyClassifier(strategy="prior")))
        out.append(("gaussian naive bayes", GaussianNB))
        for k in (1, 3, 5, 11, 25, 51):
            out.append((f"knn k={k}", lambda k=k: scaled(KNeighborsClassifier(n_neighbors=k))))
        for c in (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0):
            out.append((f"logistic C={c:g}", lambda c=c: scaled(LogisticRegression(C=c, max_iter=5000))))
        for d in (1, 2, 3, 5, 8, None):
            out.append((f"tree depth={d}", lambda d=d: DecisionTreeClassifier(max_depth=d, random_state=0)))
    else:
        out.append(("constant mean", lambda: DummyRegressor(strategy="mean")))
        out.append(("constant median", lambda: DummyRegressor(strategy="median")))
        for k in (1, 3, 5, 11, 25, 51):
            out.append((f"knn k={k}", lambda k=k: scaled(KNeighborsRegressor(n_neighbors=k))))
        for a in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0):
            out.append((f"ridge alpha={a:g}", lambda a=a: scaled(Ridge(alpha=a))))
        for d in (1, 2, 3, 5, 8, None):
            out.append((f"tree depth={d}", lambda d=d: DecisionTreeRegressor(max_depth=d, random_state=0)))
    return out


def _csv_bytes(table: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def build_demo(demo: DemoDataset) -> dict[str, bytes]:
    """All files of one demo competition, relative path -> content (deterministic)."""
    sklearn = _sklearn()
    bunch = getattr(sklearn.datasets, demo.loader)(as_frame=True)
    features: pd.DataFrame = bunch.data.reset_index(drop=True)
    target = pd.Series(np.asarray(bunch.target), name="target")
    ids = pd.Series(np.arange(len(features)), name="id")
    train_idx, test_idx = _split(len(features))

    x_train, x_test = features.iloc[train_idx], features.iloc[test_idx]
    y_train, y_test = target.iloc[train_idx].to_numpy(), target.iloc[test_idx].to_numpy()
    train = pd.concat([ids.iloc[train_idx], x_train, target.iloc[train_idx]], axis=1)
    test = pd.concat([ids.iloc[test_idx], x_test], axis=1)
    answers = pd.DataFrame({"id": ids.iloc[test_idx].to_numpy(), "target": y_test})
    if demo.task == "binary":
        sample_value: float = 0.5
    else:
        sample_value = float(np.round(y_train.mean(), 1))
    sample = pd.DataFrame({"id": answers["id"], "target": sample_value})

    rows = []
    for name, factory in _baselines(demo.task):
        model = factory().fit(x_train, y_train)
        if demo.task == "binary":
            score = metrics.roc_auc(y_test, model.predict_proba(x_test)[:, 1])
        else:
            score = metrics.rmse(y_test, model.predict(x_test))
        rows.append({"teamName": f"baseline: {name}", "score": round(score, 5), "kind": "baseline"})
    lower_better = demo.task == "regression"
    board = pd.DataFrame(rows).sort_values(
        ["score", "teamName"], ascending=[lower_better, True], kind="stable"
    )

    description = _description(demo, list(features.columns), len(train), len(test), len(board))
    return {
        "prepared/public/train.csv": _csv_bytes(train),
        "prepared/public/test.csv": _csv_bytes(test),
        "prepared/public/sample_submission.csv": _csv_bytes(sample),
        "prepared/public/description.md": description.encode("utf-8"),
        "prepared/private/test.csv": _csv_bytes(answers),
        "leaderboard.csv": _csv_bytes(board),
    }


def _description(demo: DemoDataset, columns: list[str], n_train: int, n_test: int, n_board: int) -> str:
    if demo.task == "binary":
        target = "`target`: the probability that the case is benign (class 1), a number in [0, 1]"
    else:
        target = "`target`: the predicted disease progression, a number"
    return (
        f"# {demo.competition_id}\n\n"
        f"A demo competition of mlebench-hpc built from scikit-learn's `{demo.loader}` data set "
        "(shipped with scikit-learn, no download).\n\n"
        f"## Task\n\n{demo.summary}\n\n"
        f"## Data\n\n- `train.csv`: {n_train} rows: `id`, {len(columns)} feature columns, `target`.\n"
        f"- `test.csv`: {n_test} rows: `id` and the same feature columns, no target.\n"
        "- `sample_submission.csv`: the submission format.\n\n"
        f"## Evaluation\n\nMetric: {demo.metric_name}.\n\n"
        f"Submit a CSV with one row per `id` of `test.csv` and the columns `id` and {target}.\n\n"
        f"## Leaderboard\n\nThe medal thresholds of this demo come from a leaderboard of {n_board} simple "
        "baseline models (constant, k-nearest neighbours, linear models, decision trees) scored on the "
        "test set when the competition was prepared; they are baselines, not Kaggle teams.\n"
    )


def _write_atomic(path: Path, content: bytes) -> None:
    write_atomic(path, content)  # umask modes, like mlebench prepare


def prepare_demo(data_dir: Path, competition_ids: list[str] | None = None) -> list[str]:
    """Prepare the demo competitions; files already identical are not rewritten."""
    prepared = []
    for demo in DEMOS:
        if competition_ids and demo.competition_id not in competition_ids:
            continue
        root = data_dir / demo.competition_id
        for rel, content in build_demo(demo).items():
            path = root / rel
            if path.is_file() and path.read_bytes() == content:
                continue
            _write_atomic(path, content)
        prepared.append(demo.competition_id)
    return prepared


def _default_data_dir() -> Path:
    from mlebench_hpc.config import UPSTREAM_DEFAULT_DATA_DIR, config_value

    value = config_value("DATA_DIR")
    return Path(value).expanduser() if value else UPSTREAM_DEFAULT_DATA_DIR


@click.command("prepare-demo")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to prepare (default: DATA_DIR of the config, else ~/.cache/mle-bench/data).",
)
@click.option(
    "--competition",
    "competitions",
    multiple=True,
    type=click.Choice([d.competition_id for d in DEMOS]),
    help="Only this demo (repeatable; default: all).",
)
def prepare_demo_cmd(data_dir: Path | None, competitions: tuple[str, ...]) -> None:
    """Prepare demo competitions from data sets scikit-learn ships; prints their ids."""
    target = (data_dir or _default_data_dir()).expanduser()
    try:
        ids = prepare_demo(target, list(competitions) or None)
    except OSError as e:
        raise click.ClickException(f"cannot write demo data under {target}: {e.strerror or e}") from None
    for cid in ids:
        click.echo(cid)


if __name__ == "__main__":
    prepare_demo_cmd()
