# Sourced by scripts/test and scripts/demo: create .venv with Python >= 3.11 and
# install mmbroker into it (editable), with the extras named in $1 if any.
ensure_venv() {
  local extras=${1:-}
  local python=${PYTHON:-python3}
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "mmbroker needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2; exit 1; }
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
}
