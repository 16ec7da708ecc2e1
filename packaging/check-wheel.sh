#!/usr/bin/env bash
# Installs NeoX Writer as a user would (a wheel into a fresh virtual environment, as `pip install`
# and `pipx install` do), makes that environment read-only and runs `neox-writer --self-test`
# from a clean HOME, in another folder. Fails if the self-test fails or if anything was written
# inside the installation (the check that still holds when run as root, who ignores permissions).
#   packaging/check-wheel.sh [PYTHON]     (.ci/run calls it after the test suite)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${1:-python3}
WORK=$(mktemp -d)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

echo "check-wheel: building the wheel"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT" 2>&1 | grep -v "^WARNING: Location" || true
WHEEL=$(ls "$WORK"/dist/neox_writer-*.whl)

echo "check-wheel: installing $(basename "$WHEEL") into a fresh virtual environment"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WHEEL" 2>&1 | grep -v "^WARNING: Location" || true

snapshot() { (cd "$WORK/venv" && find . -printf '%p %s %T@\n' | sort); }
snapshot > "$WORK/before.txt"
chmod -R a-w "$WORK/venv"

mkdir -p "$WORK/home" "$WORK/elsewhere"
cd "$WORK/elsewhere"
run() { env -i HOME="$WORK/home" PATH=/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen "$@"; }
run "$WORK/venv/bin/neox-writer" --version
run "$WORK/venv/bin/neox-writer" --self-test
run "$WORK/venv/bin/neox-writer" --install-desktop-entry
ENTRY="$WORK/home/.local/share/applications/neox-writer.desktop"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$ENTRY"
    echo "check-wheel: desktop-file-validate accepts $ENTRY"
fi

snapshot > "$WORK/after.txt"
if ! diff -u "$WORK/before.txt" "$WORK/after.txt" > "$WORK/diff.txt"; then
    echo "check-wheel: FAILED: the program wrote inside its installation:" >&2
    head -40 "$WORK/diff.txt" >&2
    exit 1
fi
echo "check-wheel: OK (nothing written inside the installation)"
