"""No import on agentmeter's threads of a module your threads may be using (issue 17).

Before the fix the exporter imported genai-prices (and with it httpx2) the first time it priced a call,
while the program's threads were building openai 2.x clients, which look ``httpx2`` up in ``sys.modules``:
``AttributeError: partially initialized module 'httpx2' has no attribute 'URL'``, in 6 of 6 fresh runs of
each of the ``nothing`` and ``instrument`` modes below with openai 2.54.0. Each run happens in a fresh
interpreter (imports happen once per process); ``_import_race_child.py`` logs every import with the
thread that made it, so the test also fails deterministically on any import by an agentmeter thread,
whatever the openai version installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).with_name("_import_race_child.py")
ROOT = Path(__file__).resolve().parents[2]


def run_child(mode: str, tmp_path: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMETER_")}
    env.update(AGENTMETER_DB=str(tmp_path / "agentmeter.db"), AGENTMETER_SPOOL_DIR=str(tmp_path / "spool"),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(CHILD), mode], capture_output=True, text=True, env=env,
                         timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
@pytest.mark.parametrize("mode", ["instrument", "configure", "alone"])
def test_set_up_programs_never_import_on_agentmeter_threads(mode: str, attempt: int, tmp_path: Path) -> None:
    # instrument() / configure() load the price table on the caller's thread; with no other thread
    # running, the end of the first run does
    result = run_child(mode, tmp_path)
    assert result["errors"] == []
    assert result["background_imports"] == []
    assert result["flushed"] is True
    assert result["priced"] == [1, 1, 1]  # and the calls are still priced from genai-prices


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_zero_setup_with_busy_threads_never_imports_their_modules(attempt: int, tmp_path: Path) -> None:
    result = run_child("nothing", tmp_path)
    assert result["errors"] == []
    # the exporter may load genai-prices itself only when that imports nothing but genai-prices' own modules
    assert all(name == "genai_prices" or name.startswith("genai_prices.") for name in result["background_imports"])
    if result["background_imports"]:  # pydantic and httpx2 were already imported (openai 3.x): priced
        assert result["priced"] == [1, 1, 1]
    else:  # openai 2.x (httpx, no httpx2): left unpriced rather than risk the import, and counted
        assert result["priced"] == [0, 0, 0]
        assert result["stats"]["unpriced_price_table_not_loaded"] == 3
