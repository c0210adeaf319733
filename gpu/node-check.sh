#!/usr/bin/env bash
# Check a GPU node without internet: install the wheelhouse next to the image's JAX, then
# run the suite's GPU checks (python -m analysis.node_check).
#
#   bash gpu/node-check.sh [--small] [--out DIR] [--wheelhouse DIR] [--scratch DIR] [-- ARGS]
#
#   --small        JAX on CPU (JAX_PLATFORMS=cpu, two host devices) with small sizes
#   --out DIR      results (default: $NNQS_CHECK_OUT, else runs/node-check in the repository)
#   --wheelhouse   from `make wheelhouse` (default: wheelhouse/ in the repository)
#   --scratch DIR  where the wheels are installed (default: a temporary folder, removed)
#   -- ARGS        passed on to analysis.node_check (e.g. -- --skip-bench)
#
# Environment: PYTHON, the image's interpreter (default python3). Writes DIR/install.json
# (gpu/install.py) and the JSON files of analysis.node_check; the exit status is that of
# the first step that failed (2: the kit or the image cannot be used).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

fail() {
    echo "node-check: $*" >&2
    exit 2
}

absolute() {
    mkdir -p "$1" && (cd "$1" && pwd)
}

SMALL=""
OUT="${NNQS_CHECK_OUT:-$REPO/runs/node-check}"
WHEELHOUSE="$REPO/wheelhouse"
SCRATCH=""
CHECK_ARGS=()
while (($#)); do
    case "$1" in
        --small) SMALL=1 ;;
        --out | --wheelhouse | --scratch)
            (($# >= 2)) || fail "$1 needs a folder"
            case "$1" in
                --out) OUT="$2" ;;
                --wheelhouse) WHEELHOUSE="$2" ;;
                --scratch) SCRATCH="$2" ;;
            esac
            shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; CHECK_ARGS=("$@"); break ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
    shift
done

command -v "$PYTHON" >/dev/null || fail "PYTHON=$PYTHON: no such interpreter"
if [[ "$PYTHON" == */* ]]; then  # keep a venv's symlink: only make the folder absolute
    PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
fi
[[ -f "$WHEELHOUSE/MANIFEST.json" ]] || fail "--wheelhouse $WHEELHOUSE: no wheelhouse there;" \
    "run \`make wheelhouse\` on a machine with network and copy wheelhouse/ along"
[[ -f "$REPO/analysis/node_check.py" ]] || fail "$REPO/analysis/node_check.py is missing"
WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)"
OUT="$(absolute "$OUT")"
if [[ -n "$SCRATCH" ]]; then
    SCRATCH="$(absolute "$SCRATCH")"
else
    SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/nnqs-node-site.XXXXXX")"
    trap 'rm -rf "$SCRATCH"' EXIT
fi
if [[ -n "$SMALL" ]]; then
    export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
    export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=2}"
fi
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SITE_PATH="$SCRATCH:$REPO${PYTHONPATH:+:$PYTHONPATH}"

echo "node-check: installing $WHEELHOUSE into $SCRATCH with $PYTHON"
(cd "$REPO" && "$PYTHON" -m gpu.install --wheelhouse "$WHEELHOUSE" --target "$SCRATCH" \
    --pythonpath "$SITE_PATH" --out "$OUT/install.json") || exit $?
echo "node-check: install.json written; running analysis.node_check${SMALL:+ --small}"
export PYTHONPATH="$SITE_PATH"
status=0
"$PYTHON" -m analysis.node_check --out "$OUT" ${SMALL:+--small} "${CHECK_ARGS[@]}" || status=$?
echo "node-check: analysis.node_check exited with $status; results in $OUT"
exit "$status"
