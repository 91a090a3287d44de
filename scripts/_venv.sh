# Sourced by the scripts: makes .venv with Python 3.11 and installs the project into it, once per
# change of pyproject.toml (a hash stamp), so the README's two commands work on a fresh machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' \
  || { echo "everreach-data needs Python 3.11 or newer (found $("$PY" --version 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$PY" --version)…" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.everreach-installed"
want="$(cat pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing everreach-data and its dependencies into .venv (first run takes a minute or two)…" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c 'import everreach_data' || { echo "install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
