"""The wheel, installed with ``[all]`` into a fresh virtualenv outside the checkout, works on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sqlite3, sys
from pathlib import Path
import agentmeter
from agentmeter import track_run, track_step
from agentmeter._resources import shipped_path

assert "site-packages" in agentmeter.__file__, agentmeter.__file__

@track_run(agent="wheel")
def agent():
    with track_step("s", kind="tool"):
        return 42

assert agent() == 42
assert agentmeter.flush(timeout=30).ok
db = Path(sys.argv[1])
runs = sqlite3.connect(db).execute("select agent, step_count from agent_runs").fetchall()
shipped = {n: sorted(p.name for p in shipped_path(n).iterdir()) for n in ("sql", "dashboard", "examples")}
assert all("site-packages" in str(shipped_path(n)) for n in shipped)

# the dashboard as `agentmeter dashboard` runs it: the installed script, on the store just written
from streamlit.testing.v1 import AppTest
from agentmeter.dashboard import script_path

at = AppTest.from_file(str(script_path()), default_timeout=60).run()
assert not at.exception, [e.value for e in at.exception]
tiles = {m.label: m.value for m in at.metric}
print(json.dumps({"runs": runs, "bundled": shipped, "tiles": tiles}))
"""


@pytest.mark.slow
def test_wheel_installs_with_all_extras_and_works_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("agentmeter-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{wheel}[all]"], check=True, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMETER_", "PYTHONPATH"))}
    env["AGENTMETER_DB"] = str(tmp_path / "store.db")
    env["HOME"] = str(tmp_path)
    version = subprocess.run([str(env_dir / "bin" / "agentmeter"), "--version"], capture_output=True, text=True,
                             check=True, cwd=tmp_path, env=env)
    assert version.stdout.startswith("agentmeter ")
    out = subprocess.run([str(py), "-c", SCRIPT, env["AGENTMETER_DB"]], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["runs"] == [["wheel", 1]]
    assert result["bundled"]["sql"] and result["bundled"]["dashboard"] and result["bundled"]["examples"]
    assert "streamlit_app.py" in result["bundled"]["dashboard"] and "views.py" in result["bundled"]["dashboard"]
    assert result["tiles"]["Runs"] == "1"


@pytest.mark.slow
def test_sdist_holds_what_the_quickstart_needs_and_the_metadata_is_complete(tmp_path: Path) -> None:
    """The sdist builds the wheel (python -m build makes it from the unpacked sdist) and carries the Makefile,
    the tests, the docs and the benchmarks; the metadata PyPI shows is complete, with no development extras."""
    import tarfile
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (sdist,) = dist.glob("agentmeter-*.tar.gz")
    (wheel,) = dist.glob("agentmeter-*.whl")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("Makefile", "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", ".ci/run",
                   "benchmarks/run.py", "benchmarks/requirements-peers.txt", "tests/conftest.py",
                   "tests/docs/test_docs.py", "docs/upgrading.md", "agentmeter/sql/01_account.sql"):
        assert needed in names, f"{needed} is not in the sdist"
    assert not any(n.startswith(("benchmarks/.venv", "benchmarks/results/scratch", ".venv")) for n in names)
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta_name).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist())
    headers = [line.partition(": ") for line in metadata.split("\n\n", 1)[0].splitlines()]
    fields: dict[str, list[str]] = {}
    for key, _, value in headers:
        fields.setdefault(key, []).append(value)
    assert fields["License-Expression"] == ["MIT"]
    assert fields["License-File"] == ["LICENSE"]
    urls = dict(u.split(", ", 1) for u in fields["Project-URL"])
    assert set(urls) >= {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(u.startswith("https://github.com/agentmeter/agentmeter") for u in urls.values())
    assert any(c.startswith("Development Status :: ") for c in fields["Classifier"])
    assert fields["Author"] != ["agentmeter"]
    extras = set(fields["Provides-Extra"])
    assert {"all", "mongodb", "firehose", "snowflake", "dashboard", "openai", "otel"} <= extras
    assert not extras & {"test", "dev", "bench", "core-test"}, "development dependencies are published as extras"
