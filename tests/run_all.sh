#!/usr/bin/env bash
# tests/run_all.sh: the whole CI (`make test`; `make test-bats` = --bats-only).
#
# 1. installs the test tools when missing (as root via apt: bats, bats-support, bats-assert,
#    bats-file, shellcheck, chromium for report.html's test; otherwise bats from npm into
#    ~/.cache/mlebench-hpc/bats);
# 2. as root brings up the local Slurm + Apptainer (scripts_hpc/provision/cluster_up.sh) and then
#    requires the Slurm/Apptainer tests to run (MLEBENCH_REQUIRE_*=1: unavailable = failure);
#    without root they run against a cluster that answers, or are skipped with the reason;
# 3. lint (tests/lint.sh), pytest, then bats on every tests/bats/*.bats;
# 4. prints a combined `N passed, N failed, N skipped` line; exit 1 if anything failed.
# Output goes to the terminal as it happens. Total time is bounded by MLEBENCH_TEST_BUDGET_SECS
# (default 3300 = 55 min, under CI's 60).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bats_only=0
for arg in "$@"; do
    case $arg in
        --bats-only) bats_only=1 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "run_all.sh: unknown option '$arg' (only --bats-only)" >&2; exit 2 ;;
    esac
done

readonly BUDGET=${MLEBENCH_TEST_BUDGET_SECS:-3300}
readonly NPM_BATS=${XDG_CACHE_HOME:-$HOME/.cache}/mlebench-hpc/bats
readonly T_START=$EPOCHREALTIME
WORK=$(mktemp -d)
readonly WORK
trap 'rm -rf "$WORK"' EXIT

passed=0 failed=0 skipped=0
summary=()
say() { printf '\n[run_all %(%T)T] %s\n' -1 "$*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'; }
# left: seconds of the budget that remain (at least 60, so a late step still starts).
left() { local s=$((BUDGET - ${EPOCHREALTIME%.*} + ${T_START%.*})); echo $((s > 60 ? s : 60)); }
fail_step() { failed=$((failed + 1)); summary+=("FAILED $1"); say "FAILED: $1"; }
is_root() { [[ $(id -u) == 0 ]]; }

# junit_counts FILE: "passed failed skipped" of a pytest junit XML (0 0 0 when unreadable).
junit_counts() {
    .venv/bin/python - "$1" <<'EOF' || echo "0 0 0"
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0, 0)
    raise SystemExit(0)
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
bad = tot["failures"] + tot["errors"]
print(tot["tests"] - bad - tot["skipped"], bad, tot["skipped"])
EOF
}

# ------------------------------------------------------------------------------------ tools
apt_missing=()
command -v bats >/dev/null || apt_missing+=(bats)
for lib in bats-support bats-assert bats-file; do
    [[ -f /usr/lib/bats/$lib/load.bash ]] || apt_missing+=("$lib")
done
((bats_only)) || command -v shellcheck >/dev/null || apt_missing+=(shellcheck)
# Headless Chromium opens report.html (tests/python/test_report_html.py); as root it must be there.
((bats_only)) || command -v chromium >/dev/null || apt_missing+=(chromium)
((bats_only)) || ! is_root || export MLEBENCH_REQUIRE_CHROMIUM=1
BATS=bats
if ((${#apt_missing[@]} > 0)) && is_root; then
    say "installing ${apt_missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    # One `apt-get update` for the whole run: the provisioning scripts skip theirs.
    "${apt[@]}" update >/dev/null && export MLEBENCH_APT_UPDATED=1
    "${apt[@]}" install --no-install-recommends "${apt_missing[@]}" >/dev/null ||
        fail_step "apt-get install ${apt_missing[*]}"
elif [[ " ${apt_missing[*]} " == *" bats"* ]]; then
    # Not root: bats and its libraries from npm, in the user's cache (never in the checkout).
    if [[ ! -x $NPM_BATS/node_modules/bats/bin/bats ]] && command -v npm >/dev/null; then
        say "not root: installing bats from npm into $NPM_BATS"
        mkdir -p "$NPM_BATS"
        npm install --silent --no-audit --no-fund --prefix "$NPM_BATS" \
            bats bats-support bats-assert bats-file >/dev/null || true
    fi
    if [[ -x $NPM_BATS/node_modules/bats/bin/bats ]]; then
        BATS=$NPM_BATS/node_modules/bats/bin/bats
        export BATS_LIB_PATH=$NPM_BATS/node_modules
    fi
fi

# ---------------------------------------------------------------------------------- cluster
if is_root; then
    say "root: bringing up the local Slurm + Apptainer (scripts_hpc/provision/cluster_up.sh)"
    if timeout -k 10 "$(left)" bash scripts_hpc/provision/cluster_up.sh; then
        export MLEBENCH_REQUIRE_SLURM=1
        if command -v apptainer >/dev/null && apptainer version >/dev/null 2>&1; then
            export MLEBENCH_REQUIRE_APPTAINER=1
        else
            say "no working apptainer after cluster_up.sh: Apptainer tests will be skipped"
        fi
    else
        fail_step "cluster_up.sh (Slurm/Apptainer tests will be skipped; see its error above)"
    fi
elif timeout 15 sinfo -h -o '%P' >/dev/null 2>&1; then
    say "not root: using the Slurm cluster that answers to sinfo"
else
    say "not root and no Slurm cluster answers: Slurm/Apptainer tests will be skipped" \
        "(as root, make test brings the local cluster up)"
fi

# ----------------------------------------------------------------------------------- images
# The Slurm, leak and image tests run the real grading and dummy agent images, test_llm.bats the
# AIDE image (aideml from PyPI: about 9 min and 3.9 GiB the first time), both built on mlebench-env
# (mlebench-env.sif, agent-dummy.sif, agent-aide.sif): build them (or reuse the cached ones:
# build_images.sh skips images whose inputs did not change). This checkout's agents, whatever
# MLEBENCH_DIR says.
if [[ ${MLEBENCH_REQUIRE_APPTAINER:-0} == 1 ]]; then
    for agent in dummy aide; do
        say "images: scripts_hpc/build_images.sh --agent $agent --builder apptainer"
        t_image=$EPOCHREALTIME
        if timeout -k 10 "$(left)" bash scripts_hpc/build_images.sh --agent "$agent" --agents-dir "$PWD/agents" \
            --builder apptainer; then
            passed=$((passed + 1)); summary+=("images ($agent): built or reused in $(since "$t_image") s")
        else
            fail_step "images (scripts_hpc/build_images.sh --agent $agent)"
        fi
    done
fi

# ------------------------------------------------------------------------------------- lint
if ((!bats_only)); then
    say "lint: tests/lint.sh"
    if timeout -k 10 "$(left)" bash tests/lint.sh; then
        passed=$((passed + 1)); summary+=("lint: passed")
    else
        fail_step "lint"
    fi
fi

# ----------------------------------------------------------------------------------- pytest
if ((!bats_only)); then
    say "pytest: .venv/bin/pytest -q"
    if [[ ! -x .venv/bin/pytest ]]; then
        fail_step "pytest: .venv/bin/pytest missing; run 'make install'"
    else
        rc=0
        # the pandas-version cross-check compares against the other pandas (make test builds it)
        [[ -x .venv-pd22/bin/python ]] && export MLEBENCH_HPC_ALT_PYTHON=$PWD/.venv-pd22/bin/python
        timeout -k 10 "$(left)" .venv/bin/pytest -q -rs --junitxml="$WORK/pytest.xml" || rc=$?
        read -r p f s < <(junit_counts "$WORK/pytest.xml")
        passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
        summary+=("pytest: $p passed, $f failed, $s skipped (exit $rc)")
        case $rc in
            0 | 1) ((rc == 0 || f > 0)) || fail_step "pytest exited 1 with no failed test counted" ;;
            5) fail_step "pytest collected no tests (exit 5)" ;;
            124 | 137) fail_step "pytest ran out of the time budget" ;;
            *) fail_step "pytest exited $rc (usage or internal error)" ;;
        esac
    fi
fi

# ------------------------------------------------------------- graders under upstream's pins
# The grading engine's tests again under pandas 2.2 + scikit-learn 1.5 (upstream's versions).
if ((!bats_only)) && [[ -x .venv-pd22/bin/pytest ]]; then
    say "pytest (pandas 2.2, scikit-learn 1.5): the grading engine's tests"
    rc=0
    MLEBENCH_HPC_ALT_PYTHON=$PWD/.venv/bin/python timeout -k 10 "$(left)" .venv-pd22/bin/pytest -q -rs \
        -p no:cacheprovider --junitxml="$WORK/pytest-pd22.xml" \
        tests/python/test_metrics.py tests/python/test_thresholds.py tests/python/test_validation.py \
        tests/python/test_builtin_competitions.py tests/python/test_pandas_compat.py \
        tests/python/test_demo.py tests/conformance || rc=$?
    read -r p f s < <(junit_counts "$WORK/pytest-pd22.xml")
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    summary+=("pytest pandas 2.2: $p passed, $f failed, $s skipped (exit $rc)")
    ((rc == 0 || f > 0)) || fail_step "pytest under pandas 2.2 exited $rc"
fi

# ------------------------------------------------------------------------------------- bats
shopt -s nullglob
bats_files=(tests/bats/*.bats)
if ! command -v "$BATS" >/dev/null; then
    fail_step "bats: not installed (apt-get install bats bats-support bats-assert bats-file, or run as root)"
elif ((${#bats_files[@]} == 0)); then
    fail_step "bats: no tests/bats/*.bats"
else
    say "bats: $BATS tests/bats (${#bats_files[@]} files)"
    # A per-test bound: no single hung job can eat the CI budget.
    export BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-600}
    rc=0
    timeout -k 10 "$(left)" "$BATS" --tap --timing tests/bats | tee "$WORK/bats.tap" || rc=${PIPESTATUS[0]}
    p=$(grep -E '^ok ' "$WORK/bats.tap" | grep -vcE ' # skip( |$)' || true)
    s=$(grep -cE '^ok .* # skip( |$)' "$WORK/bats.tap" || true)
    f=$(grep -cE '^not ok ' "$WORK/bats.tap" || true)
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    summary+=("bats: $p passed, $f failed, $s skipped (exit $rc)")
    if ((rc != 0 && f == 0)); then
        fail_step "bats exited $rc with no failed test counted (syntax error or time budget?)"
    fi
fi

# ---------------------------------------------------------------------------------- summary
say "summary after $(since "$T_START") s"
printf '  %s\n' "${summary[@]}"
printf '%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
((failed == 0))
