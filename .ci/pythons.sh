#!/usr/bin/env bash
# Run the core and reliability suites on every supported Python besides the default one:
#   .ci/pythons.sh [3.10 3.12 3.13]
# For each version: an interpreter from PATH (python3.X), else from pyenv (~/.pyenv/versions/3.X.*), else
# Debian's packages (python3.X + python3.X-venv, where the release has them: Debian 13 has 3.13); then a
# virtualenv .venv-3.X with agentmeter and its core test dependencies (pyproject's `core-test` dependency group), and
# pytest on tests/core and tests/reliability there. Exits non-zero if a version is missing or fails.
set -uo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.12 3.13)

find_python() {
  local v=$1 p
  p=$(command -v "python$v" 2>/dev/null) && "$p" -c 'import venv' 2>/dev/null && { echo "$p"; return 0; }
  for p in "$HOME"/.pyenv/versions/"$v".*/bin/"python$v" /root/.pyenv/versions/"$v".*/bin/"python$v"; do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  if command -v apt-get >/dev/null 2>&1 && apt-cache policy "python$v-venv" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y -qq "python$v" "python$v-venv" >/dev/null && command -v "python$v" && return 0
  fi
  return 1
}

status=0
summary=()
for v in "${versions[@]}"; do
  if ! py=$(find_python "$v"); then
    echo "python$v: not found (PATH, pyenv, Debian packages)" >&2
    summary+=("$v: MISSING"); status=1; continue
  fi
  venv=".venv-$v"
  if [ ! -x "$venv/bin/python" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    "$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q --upgrade 'pip>=25.1' \
      && "$venv/bin/python" -m pip install -q -e . --group core-test && touch "$venv/.installed" \
      || { summary+=("$v: INSTALL FAILED"); status=1; continue; }
  fi
  echo "== Python $v ($("$venv/bin/python" -V 2>&1)): tests/core tests/reliability"
  if "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/core tests/reliability; then
    summary+=("$v: passed")
  else
    summary+=("$v: FAILED"); status=1
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
