"""``agentmeter.score``: a numeric, boolean or categorical score on a run, at any time, from any process.

The call checks its arguments (``TypeError`` for a wrong type, ``ValueError`` for a wrong value: at the
call, in the code that gave them), freezes the score into a :class:`~agentmeter._record.FinishedScore` and
hands it to the processor like a finished run: the same lanes, retries, spool and sinks, never blocking,
never raising from the background. A score is idempotent by (run, name, source): the latest call wins.
"""

from __future__ import annotations

import math
from typing import Any

from . import _clock, _guard, _ids, _state

__all__ = ["score"]

#: the longest name, source or categorical value; the longest comment (longer comments are cut)
MAX_NAME_CHARS = 200
MAX_COMMENT_CHARS = 2000


def _text(arg: str, value: Any, limit: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str):
        raise TypeError(f"score {arg} must be a string, got {type(value).__name__}")
    if not value.strip() or len(value) > limit:
        raise ValueError(f"score {arg} must be a non-empty string of at most {limit} characters, got {value!r:.80}")
    return value


def _run_id(run: Any) -> str:
    if isinstance(run, str):
        return _text("run_id", run)
    run_id = getattr(run, "run_id", None) if type(run).__name__ == "Run" else None
    if isinstance(run_id, str):  # a run handle (agentmeter.Run)
        return run_id
    raise TypeError(f"score run_id must be a run id (str) or a run handle, got {type(run).__name__}")


def _value(value: Any) -> tuple[str, float | None, str | None]:
    """(data_type, value, label) of a score value."""
    if isinstance(value, bool):
        return "boolean", 1.0 if value else 0.0, None
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"score value must be a finite number, got {value!r}")
        return "numeric", number, None
    if isinstance(value, str):
        return "categorical", None, _text("value", value)
    raise TypeError(f"score value must be a number, a bool or a string (a category), got {type(value).__name__}")


def score(run_id: Any, name: str, value: float | bool | str, *, comment: str | None = None,
          source: str = "user") -> None:
    """Record a score of run ``run_id`` (its id, or the run handle): user feedback, an evaluation.

    ``value`` is a number (``0.8``), a bool (thumbs up/down: stored as 1 or 0) or a string (a category,
    ``"correct"``). One score per (run, ``name``, ``source``): scoring again replaces it, the latest call
    winning in every sink, even when it comes from another process long after the run was exported.
    ``comment`` is free text (scrubbed of secrets, cut at 2000 characters). Wrong types raise
    ``TypeError`` and wrong values ``ValueError``, here; nothing is raised once the score is handed to the
    exporter, which never blocks.
    """
    key = _run_id(run_id)
    score_name = _text("name", name)
    score_source = _text("source", source)
    data_type, number, label = _value(value)
    if comment is not None and not isinstance(comment, str):
        raise TypeError(f"score comment must be a string or None, got {type(comment).__name__}")
    if not _state.enabled():
        return
    try:
        from ._record import FinishedScore  # with _capture ~12 ms: loaded with the first score, not at import
        from ._scrub import scrub  # its patterns take ~3 ms to compile: loaded with the first score

        if label is not None:
            label = scrub(label)
        if comment is not None:
            comment = scrub(comment[:MAX_COMMENT_CHARS])
        finished = FinishedScore(_ids.new_id(), key, score_name, score_source, number, label, data_type, comment,
                                 _clock.wall_us())
        _state.processor().submit(finished)
    except Exception as exc:
        _guard.internal_error("score", exc)
