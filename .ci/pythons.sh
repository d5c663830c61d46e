#!/usr/bin/env bash
# Run the core and reliability suites on every supported Python besides the default one:
#   .ci/pythons.sh [--allow-missing] [3.10 3.12 3.13]
# For each version, an interpreter from, in this order:
#   1. PATH (python3.X), 2. pyenv (~/.pyenv/versions/3.X.*), 3. one this script built before
#   ($AGENTMETER_PYTHONS_DIR, default ~/.cache/agentmeter-pythons/3.X),
#   4. Debian's binary packages (python3.X + python3.X-venv, where this release has them),
#   5. built from Debian's source package of python3.X (upstream CPython's tarball as Debian ships it), from
#      the suites in $AGENTMETER_PYTHON_SOURCE_SUITES (default "trixie sid": they have 3.13 and 3.14; no
#      Debian suite has 3.10 or 3.12 any more), through a private apt configuration (the machine's own is
#      left alone), into the folder of step 3; about 5 minutes on 2 cores.
# Then a virtualenv .venv-3.X with agentmeter, the extras in $EXTRAS and its core test dependencies
# (pyproject's `core-test` dependency group), and pytest on tests/core and tests/reliability there.
# Exits non-zero if a version fails its tests, or cannot be found (unless --allow-missing: then it is
# reported as MISSING, and counted as such in the summary line, but does not fail the run).
set -uo pipefail
cd "$(dirname "$0")/.."
allow_missing=0
if [ "${1:-}" = "--allow-missing" ]; then allow_missing=1; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.12 3.13)
built_root=${AGENTMETER_PYTHONS_DIR:-$HOME/.cache/agentmeter-pythons}
source_suites=${AGENTMETER_PYTHON_SOURCE_SUITES:-trixie sid}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
# the extras tests/reliability/test_missing_extras.py and test_secrets.py expect beside the one they hide
EXTRAS=mongodb,firehose,snowflake,dashboard

# CPython's build dependencies on Debian (the modules the tests and pip need: sqlite3, ssl, ctypes, zlib...)
BUILD_DEPS=(build-essential pkg-config libssl-dev zlib1g-dev libffi-dev libsqlite3-dev libbz2-dev liblzma-dev
            libreadline-dev libncurses-dev uuid-dev libgdbm-dev libexpat1-dev xz-utils)

build_from_debian_source() {
  local v=$1 work apt_dir opts orig prefix
  prefix="$built_root/$v"
  command -v apt-get >/dev/null 2>&1 || return 1
  work=$(mktemp -d) || return 1
  apt_dir="$work/apt"
  mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$work/src"
  {
    echo "Types: deb-src"
    echo "URIs: http://deb.debian.org/debian"
    echo "Suites: $source_suites"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  } > "$apt_dir/parts/python-source.sources"
  opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/parts"
        -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
  echo "python$v: building CPython from Debian's source package (suites: $source_suites)" >&2
  apt-get "${opts[@]}" -qq update >/dev/null 2>&1 || { rm -rf "$work"; return 1; }
  for suite in $source_suites; do  # one suite at a time: a mirror may lack the newest suite's files
    (cd "$work/src" && apt-get "${opts[@]}" -qq source --download-only "python$v/$suite" >/dev/null 2>&1) && break
  done
  orig=$(ls "$work"/src/python"$v"_*.orig.tar.* 2>/dev/null | head -1)
  if [ -z "$orig" ]; then
    echo "python$v: no Debian source package in $source_suites" >&2
    rm -rf "$work"; return 1
  fi
  $SUDO apt-get install -y -qq "${BUILD_DEPS[@]}" >/dev/null 2>&1 || true
  mkdir -p "$work/build" && tar xf "$orig" -C "$work/build" --strip-components=1 || { rm -rf "$work"; return 1; }
  if (cd "$work/build" && ./configure --prefix="$prefix" --without-ensurepip >"$work/configure.log" 2>&1 \
        && make -j"$(nproc)" >"$work/make.log" 2>&1 && make install >"$work/install.log" 2>&1) \
      && "$prefix/bin/python$v" -c 'import sqlite3, ssl, ctypes, zlib, venv' 2>/dev/null; then
    rm -rf "$work"
    return 0
  fi
  echo "python$v: the build failed; logs in $work" >&2
  return 1
}

find_python() {
  local v=$1 p
  p=$(command -v "python$v" 2>/dev/null) && "$p" -c 'import venv' 2>/dev/null && { echo "$p"; return 0; }
  for p in "$HOME"/.pyenv/versions/"$v".*/bin/"python$v" /root/.pyenv/versions/"$v".*/bin/"python$v" \
           "$built_root/$v/bin/python$v"; do
    [ -x "$p" ] && "$p" -c 'import venv' 2>/dev/null && { echo "$p"; return 0; }
  done
  if command -v apt-get >/dev/null 2>&1; then
    [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || $SUDO apt-get update -qq >/dev/null 2>&1
    if apt-cache policy "python$v-venv" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      $SUDO apt-get install -y -qq "python$v" "python$v-venv" >/dev/null && command -v "python$v" && return 0
    fi
  fi
  build_from_debian_source "$v" && { echo "$built_root/$v/bin/python$v"; return 0; }
  return 1
}

status=0
summary=()
for v in "${versions[@]}"; do
  if ! py=$(find_python "$v"); then
    echo "python$v: MISSING: not on PATH, not under pyenv, no Debian package nor Debian source package" >&2
    summary+=("$v: MISSING"); [ $allow_missing = 1 ] || status=1; continue
  fi
  venv=".venv-$v"
  stamp="$py $(sha256sum pyproject.toml | cut -c1-64)"  # a changed pyproject or interpreter: install again
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv"
    "$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q --upgrade 'pip>=25.1' \
      && "$venv/bin/python" -m pip install -q -e ".[$EXTRAS]" --group core-test \
      && echo "$stamp" > "$venv/.installed" \
      || { summary+=("$v: INSTALL FAILED"); status=1; continue; }
  fi
  echo "== Python $v ($("$venv/bin/python" -V 2>&1), $py): tests/core tests/reliability"
  # A test that fails is run once more, alone (--last-failed): a second failure fails the run; a pass is
  # reported as FLAKY with the failing test's name in the log above, never hidden.
  cache="$(pwd)/.pytest-cache-$v"
  rm -rf "$cache"
  if "$venv/bin/python" -m pytest -q -o cache_dir="$cache" tests/core tests/reliability; then
    summary+=("$v: passed")
  elif echo "== Python $v: running the failed tests again" \
      && "$venv/bin/python" -m pytest -q -o cache_dir="$cache" --last-failed --last-failed-no-failures none \
         tests/core tests/reliability; then
    summary+=("$v: FLAKY (failed once, passed when run again: see the log)")
  else
    summary+=("$v: FAILED"); status=1
  fi
done
printf 'pythons: %s\n' "${summary[@]}"
exit $status
