#!/usr/bin/env bash
# Core only: `pip install <repo>` (no extras) into a fresh virtual environment trains, saves,
# loads and predicts a text classifier; no optional dependency is installed there, and a
# command that needs one stops with the one line naming its extra. Exits non-zero otherwise.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
WORK=$(mktemp -d /tmp/dlforge-core.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

# Build from a copy of the working tree (tracked and untracked, not ignored files), so the
# build leaves nothing in the repository and no stale build/ folder goes into the wheel.
mkdir "$WORK/src"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$WORK/src")
else
    cp -r "$REPO"/. "$WORK/src" && rm -rf "$WORK/src/.venv" "$WORK/src/build"
fi

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet "$WORK/src"
echo "core install: pip install dlforge (no extras) in $(( $(date +%s) - start )) s"

cd "$WORK"
"$WORK/venv/bin/python" - <<'EOF'
import importlib.util

from dlforge import TextClassifier, load
from dlforge.testing import toy_texts

optional = ["optuna", "fastapi", "uvicorn", "onnx", "onnxruntime", "fairlearn", "opacus",
            "captum", "mlflow", "tensorboard"]
present = [m for m in optional if importlib.util.find_spec(m) is not None]
assert not present, f"core install brought optional dependencies: {present}"

texts, labels = toy_texts(60, seed=0)
clf = TextClassifier(vocab_size=300, max_length=16, d_model=16, heads=2, layers=1, epochs=1,
                     batch_size=16, precision="fp32", verbose=0)
clf.fit(texts, labels)
clf.save("run")
same = load("run")
pred = list(same.predict(texts))
assert pred == list(clf.predict(texts)), "the loaded model predicts differently"
assert set(pred) <= set(labels) and same.predict_proba(texts).shape == (60, 2)
print("core install: trained, saved, loaded and predicted a TextClassifier")
EOF

# A feature of an extra, on a real core install: one line, exit code 2.
set +e
msg=$("$WORK/venv/bin/dlforge" serve "$WORK/run" 2>&1 >/dev/null)
code=$?
set -e
want="error: dlforge serve needs the serve extra, which is not installed: pip install 'dlforge[serve]'"
if [ "$code" != 2 ] || [ "$msg" != "$want" ]; then
    echo "core install: expected exit code 2 and '$want', got $code and:" >&2
    echo "$msg" >&2
    exit 1
fi
echo "core install: dlforge serve without the serve extra: $msg"
echo "core install: OK in $(( $(date +%s) - start )) s"
