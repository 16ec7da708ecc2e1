#!/usr/bin/env bash
# Builds the one-folder NeoX Writer bundle for this system and archives it.
#   packaging/build.sh            -> dist/NeoXWriter/ and dist/NeoXWriter-<version>-<system>.tar.gz (.zip on Windows)
# The same script runs locally and in .github/workflows/bundles.yml on every system.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py | head -1)
export NEOX_WRITER_VERSION="$VERSION"
BUILD_VENV=${BUILD_VENV:-$ROOT/build/bundle-venv}
PYTHON=${PYTHON:-python3}

# A clean build environment holding only the app's own dependencies plus the bundler.
if [ ! -d "$BUILD_VENV" ]; then
    "$PYTHON" -m venv "$BUILD_VENV"
fi
if [ -x "$BUILD_VENV/Scripts/python.exe" ]; then VPY="$BUILD_VENV/Scripts/python.exe"; else VPY="$BUILD_VENV/bin/python"; fi
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q "$ROOT" "pyinstaller>=6.10" "pillow>=10"

mkdir -p "$ROOT/build"
# From build/, so that the source tree's app/ (which lacks app/resources) cannot shadow the installed copy.
(cd "$ROOT/build" && "$VPY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" "$ROOT/packaging/neox-writer.spec")

case "$(uname -s)" in
    Linux*)
        SYSTEM=linux-$(uname -m)
        cp packaging/neox-writer.desktop dist/NeoXWriter/
        cp resources/icons/neox-writer.png dist/NeoXWriter/neox-writer.png
        tar -C dist -czf "dist/NeoXWriter-$VERSION-$SYSTEM.tar.gz" NeoXWriter
        ARCHIVE="dist/NeoXWriter-$VERSION-$SYSTEM.tar.gz"
        ;;
    Darwin*)
        SYSTEM=macos-$(uname -m)
        ditto -c -k --keepParent dist/NeoXWriter.app "dist/NeoXWriter-$VERSION-$SYSTEM.zip"
        ARCHIVE="dist/NeoXWriter-$VERSION-$SYSTEM.zip"
        ;;
    MINGW*|MSYS*|CYGWIN*)
        SYSTEM=windows-x64
        (cd dist && 7z a -tzip -bd "NeoXWriter-$VERSION-$SYSTEM.zip" NeoXWriter >/dev/null)
        ARCHIVE="dist/NeoXWriter-$VERSION-$SYSTEM.zip"
        ;;
esac
echo "bundle: dist/NeoXWriter ($(du -sh dist/NeoXWriter | cut -f1)); archive: $ARCHIVE ($(du -sh "$ARCHIVE" | cut -f1))"
