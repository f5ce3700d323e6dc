# Sourced by scripts/test and scripts/demo: create .venv with Python >= 3.11 and
# install mmbroker into it (editable), with the extras named in $1 if any (and then also the
# Python client's own distribution, clients/python, which its tests use), at exactly the
# dependency versions in constraints.txt (the tested ones; refresh with scripts/lock).
ensure_venv() {
  local extras=${1:-}
  local python=${PYTHON:-python3}
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "mmbroker needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2; exit 1; }
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  # Installed already from these very files (and with these extras, or the test extra that
  # holds every other): nothing to do. Not only quicker: tests/test_readme.py runs
  # scripts/demo while the suite's other worker runs tests out of this .venv, which a
  # reinstall (an editable one is always redone) would pull from under them.
  local stamp=.venv/mmbroker-installed
  local installed
  installed=$({ .venv/bin/python --version; cat pyproject.toml constraints.txt \
                 clients/python/pyproject.toml; } | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ -x .venv/bin/mmbroker ]; then
    local have_hash have_extras
    read -r have_hash have_extras < "$stamp" || true
    if [ "$have_hash" = "$installed" ] \
       && { [ -z "$extras" ] || [ "${have_extras:-}" = "$extras" ]; }; then
      return 0
    fi
  fi
  rm -f "$stamp"
  # pip's and setuptools' chatter (the "Editable installation" box) goes to a log, shown
  # only when the install fails: the first screen is the broker's own.
  local log=.venv/install.log
  if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install --quiet --disable-pip-version-check \
              -c constraints.txt -e ".${extras:+[$extras]}" \
              ${extras:+-e ./clients/python}; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing mmbroker into .venv failed (log above, also in $log)" >&2
    exit 1
  fi
  echo "$installed $extras" > "$stamp"
}

# The dashboard's end-to-end tests drive Debian's Chromium (Playwright talks to it;
# no browser is downloaded). Installed with apt when missing and we may (root).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the dashboard tests..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no chromium; the dashboard browser tests will be skipped" \
         "(install Debian's chromium package)" >&2
  fi
}

ensure_stilts() {
  command -v stilts >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's stilts (taplint, votlint) for the TAP tests..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stilts >/dev/null
  else
    echo "note: no stilts; the TAP test's taplint/votlint checks will be skipped" \
         "(install Debian's stilts package)" >&2
  fi
}
