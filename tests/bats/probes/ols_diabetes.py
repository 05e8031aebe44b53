"""A probe agent's model for demo-diabetes: ordinary least squares in plain Python (the dummy image
has no numpy), deterministic: its RMSE on the demo split is a bronze medal. Run by test_results.bats
inside the agent's container (its /home/data, /home/submission)."""

import csv


def rows(path: str) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def solve(a: list[list[float]]) -> list[float]:
    """Gauss-Jordan elimination with partial pivoting of the augmented matrix A."""
    n = len(a)
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        for r in range(n):
            if r != c:
                m = a[r][c] / a[c][c]
                a[r] = [x - m * y for x, y in zip(a[r], a[c], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


train, test = rows("/home/data/train.csv"), rows("/home/data/test.csv")
features = [k for k in train[0] if k not in ("id", "target")]
x = [[1.0] + [float(r[k]) for k in features] for r in train]
y = [float(r["target"]) for r in train]
n = len(features) + 1
normal = [
    [sum(v[i] * v[j] for v in x) for j in range(n)] + [sum(v[i] * t for v, t in zip(x, y, strict=True))]
    for i in range(n)
]
w = solve(normal)
with open("/home/submission/submission.csv", "w") as out:
    out.write("id,target\n")
    for r in test:
        pred = sum(a * b for a, b in zip(w, [1.0] + [float(r[k]) for k in features], strict=True))
        out.write(f"{r['id']},{pred!r}\n")
