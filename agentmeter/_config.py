"""Settings: ``configure(...)`` arguments and ``AGENTMETER_*`` environment variables.

Invalid settings fail fast with a ``ValueError`` naming the setting and what is accepted, at configuration
time, never at the first export. Each setting accepts only its own type: booleans are ``True``/``False``
(not ``"false"``, not ``0``), paths are ``str`` or ``os.PathLike``, durations are finite numbers.

Environment variables are read one by one (:func:`load_settings`): a bad one is reported with its name and
left out (its default applies), the others still apply. ``AGENTMETER_DISABLED`` wins over everything. A
variable set to the empty string counts as unset. Booleans from the environment are ``true``/``false``,
``1``/``0``, ``yes``/``no`` or ``on``/``off``, in any case.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from . import _guard
from ._paths import default_db_path

__all__ = ["BOOL_FIELDS", "ENV_VARS", "EnvProblem", "Settings", "default_db_path", "load_settings",
           "settings_from_env", "warn_problems"]

#: settings that hold a boolean (``True``/``False`` only)
BOOL_FIELDS = ("enabled", "capture", "handle_sigterm", "propagate_threads", "sync_export", "always_keep_errors")
#: the largest integer a setting takes (SQLite's and every counter's limit)
_MAX_INT = 2**63 - 1


def _boolean(name: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, bool):  # "false" is a non-empty string, hence true: refuse it
            raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")

    return check


def _positive_int(name: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_INT:
            raise ValueError(f"{name} must be a positive integer (at most 2**63-1), got {value!r}")

    return check


def _positive_float(name: str, allow_zero: bool = False) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        # finite and within what threading waits accept: an infinite flush_interval would crash the exporter
        ok = ok and (isinstance(value, int) or math.isfinite(value)) and value <= threading.TIMEOUT_MAX
        ok = ok and (value >= 0 if allow_zero else value > 0)
        if not ok:
            kind = "a finite number >= 0" if allow_zero else "a finite number > 0"
            raise ValueError(f"{name} must be {kind} (seconds), got {value!r}")

    return check


def _fraction(name: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")

    return check


def _callable_or_none(name: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not callable(value):
            raise ValueError(f"{name} must be a callable or None, got {type(value).__name__}")

    return check


def _check_sinks(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    from .sinks._base import Sink  # the sinks package: loaded when sinks are configured

    for sink in value:
        if not isinstance(sink, Sink):
            raise ValueError(
                f"sinks must be a list of agentmeter.sinks.Sink instances (SQLiteSink, MongoDBSink, "
                f"FirehoseSink, MemorySink or your own subclass), got {type(sink).__name__}"
            )
    names = [s.name for s in value]
    if len(set(names)) != len(names):
        raise ValueError(f"sinks must have distinct names (pass name=...), got {names}")


def _check_prices(value: Any) -> None:
    from .pricing import validate_prices  # light: genai-prices is loaded by pricing.load_library()

    validate_prices(value)


def _check_spill(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or value not in ("drop_oldest", "drop_newest"):
        raise ValueError(f"spool_full_policy must be 'drop_oldest' or 'drop_newest', got {value!r}")


def _spool_dir(value: Any) -> Any:
    """A path as a ``str`` (``~`` expanded); anything else is left for :func:`_check_spool_dir` to refuse."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value:
        return os.path.expanduser(value)
    return value


def _check_spool_dir(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"spool_dir must be None or a non-empty path (str or os.PathLike), got {value!r} "
                         f"({type(value).__name__})")


#: the longest ``version`` (and session or user id) kept: longer values are refused (config) or cut (runs)
MAX_LABEL_CHARS = 200


def _check_version(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL_CHARS:
        raise ValueError(f"version must be None or a non-empty string of at most {MAX_LABEL_CHARS} characters "
                         f"(your agent's release, e.g. '1.4.2'), got {value!r} ({type(value).__name__})")


def _check_slow(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:  # NaN >= 0 is false
        raise ValueError(f"slow_run_ms must be None or a number >= 0 (milliseconds), got {value!r}")


@attrs.frozen
class Settings:
    """Every setting, with its default. Build with :func:`agentmeter.configure`."""

    enabled: bool = attrs.field(default=True, validator=_boolean("enabled"))
    #: None means the default: a SQLiteSink at :func:`default_db_path`.
    sinks: tuple[Any, ...] | None = attrs.field(default=None, validator=_check_sinks)
    capture: bool = attrs.field(default=False, validator=_boolean("capture"))
    capture_max_chars: int = attrs.field(default=65536, validator=_positive_int("capture_max_chars"))
    redact: Callable[[Any], Any] | None = attrs.field(default=None, validator=_callable_or_none("redact"))
    batch_size: int = attrs.field(default=100, validator=_positive_int("batch_size"))
    flush_interval: float = attrs.field(default=1.0, validator=_positive_float("flush_interval"))
    max_queue_runs: int = attrs.field(default=10_000, validator=_positive_int("max_queue_runs"))
    max_queue_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int("max_queue_bytes"))
    max_attempts: int = attrs.field(default=4, validator=_positive_int("max_attempts"))
    retry_initial: float = attrs.field(default=0.5, validator=_positive_float("retry_initial", True))
    retry_max: float = attrs.field(default=10.0, validator=_positive_float("retry_max", True))
    exit_timeout: float = attrs.field(default=5.0, validator=_positive_float("exit_timeout", True))
    #: a sink.write (with its retries) still running after this many seconds is treated as hung: its batch
    #: is spooled and the sink's lane spools directly until the write returns
    write_timeout: float = attrs.field(default=30.0, validator=_positive_float("write_timeout"))
    #: install the SIGTERM handler (open runs recorded as cancelled, flush, then the previous handler)
    handle_sigterm: bool = attrs.field(default=False, validator=_boolean("handle_sigterm"))
    propagate_threads: bool = attrs.field(default=True, validator=_boolean("propagate_threads"))
    sync_export: bool = attrs.field(default=False, validator=_boolean("sync_export"))
    prices: Mapping[str, Any] = attrs.field(factory=dict, validator=lambda _i, _a, v: _check_prices(v))
    spool_dir: str | None = attrs.field(default=None, converter=_spool_dir, validator=_check_spool_dir)
    spool_max_bytes: int = attrs.field(default=512 * 1024 * 1024, validator=_positive_int("spool_max_bytes"))
    spool_full_policy: str = attrs.field(default="drop_oldest", validator=_check_spill)
    sample_rate: float = attrs.field(default=1.0, validator=_fraction("sample_rate"))
    always_keep_errors: bool = attrs.field(default=True, validator=_boolean("always_keep_errors"))
    slow_run_ms: float | None = attrs.field(default=None, validator=lambda _i, _a, v: _check_slow(v))
    #: the release of the agent or app: every run without a version of its own (or a parent's) gets it
    version: str | None = attrs.field(default=None, validator=_check_version)


# env var -> (setting, parser). Parsers raise ValueError naming the variable.
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(var: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{var} must be one of true/false, 1/0, yes/no, on/off (any case); got {text!r}")

    return parse


def _num(var: str, kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{var} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None

    return parse


ENV_VARS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "AGENTMETER_CAPTURE": ("capture", _bool("AGENTMETER_CAPTURE"), "capture inputs and outputs everywhere"),
    "AGENTMETER_CAPTURE_MAX_CHARS": ("capture_max_chars", _num("AGENTMETER_CAPTURE_MAX_CHARS", int),
                                     "size cap of one captured value, in characters"),
    "AGENTMETER_BATCH_SIZE": ("batch_size", _num("AGENTMETER_BATCH_SIZE", int), "runs per sink write"),
    "AGENTMETER_FLUSH_INTERVAL": ("flush_interval", _num("AGENTMETER_FLUSH_INTERVAL", float),
                                  "seconds between background exports"),
    "AGENTMETER_MAX_QUEUE_RUNS": ("max_queue_runs", _num("AGENTMETER_MAX_QUEUE_RUNS", int),
                                  "runs held in memory per sink before spilling"),
    "AGENTMETER_MAX_QUEUE_BYTES": ("max_queue_bytes", _num("AGENTMETER_MAX_QUEUE_BYTES", int),
                                   "approximate bytes held in memory per sink before spilling"),
    "AGENTMETER_MAX_ATTEMPTS": ("max_attempts", _num("AGENTMETER_MAX_ATTEMPTS", int),
                                "attempts per batch before it is spooled"),
    "AGENTMETER_EXIT_TIMEOUT": ("exit_timeout", _num("AGENTMETER_EXIT_TIMEOUT", float),
                                "seconds to deliver at interpreter exit before spooling the rest"),
    "AGENTMETER_WRITE_TIMEOUT": ("write_timeout", _num("AGENTMETER_WRITE_TIMEOUT", float),
                                 "seconds before a sink write is treated as hung and its batch spooled"),
    "AGENTMETER_HANDLE_SIGTERM": ("handle_sigterm", _bool("AGENTMETER_HANDLE_SIGTERM"),
                                  "record open runs as cancelled and flush on SIGTERM"),
    "AGENTMETER_PROPAGATE_THREADS": ("propagate_threads", _bool("AGENTMETER_PROPAGATE_THREADS"),
                                     "carry the current run into ThreadPoolExecutor tasks"),
    "AGENTMETER_SYNC": ("sync_export", _bool("AGENTMETER_SYNC"), "export on the caller's thread (tests only)"),
    "AGENTMETER_SPOOL_DIR": ("spool_dir", str.strip, "folder of the on-disk spool"),
    "AGENTMETER_SPOOL_MAX_BYTES": ("spool_max_bytes", _num("AGENTMETER_SPOOL_MAX_BYTES", int),
                                   "size limit of the spool"),
    "AGENTMETER_SPOOL_FULL_POLICY": ("spool_full_policy", str.strip,
                                     "drop_oldest or drop_newest when the spool is full"),
    "AGENTMETER_SAMPLE_RATE": ("sample_rate", _num("AGENTMETER_SAMPLE_RATE", float),
                               "fraction of runs whose captured payloads are kept"),
    "AGENTMETER_ALWAYS_KEEP_ERRORS": ("always_keep_errors", _bool("AGENTMETER_ALWAYS_KEEP_ERRORS"),
                                      "keep payloads of failed runs whatever the sample rate"),
    "AGENTMETER_SLOW_RUN_MS": ("slow_run_ms", _num("AGENTMETER_SLOW_RUN_MS", float),
                               "keep payloads of runs at least this long (ms) whatever the sample rate"),
    "AGENTMETER_VERSION": ("version", str.strip, "release of your agent, recorded on every run (e.g. 1.4.2)"),
}


@attrs.frozen
class EnvProblem:
    """An environment variable that could not be used: left out, its default applies."""

    variable: str
    message: str


def _disabled(env: Mapping[str, str]) -> tuple[bool, EnvProblem | None]:
    """The kill switch: any value but a false one (``0``, ``false``, ``no``, ``off``, empty) disables. An
    operator who typed ``AGENTMETER_DISABLED=Y`` meant it: disabled, and the value is reported."""
    text = env.get("AGENTMETER_DISABLED", "")
    low = text.strip().lower()
    if low in _FALSE or not low:
        return False, None
    if low in _TRUE:
        return True, None
    return True, EnvProblem("AGENTMETER_DISABLED", f"AGENTMETER_DISABLED must be one of true/false, 1/0, yes/no, "
                                                   f"on/off (any case); got {text!r}: taken as on (disabled)")


def _check_field(name: str, value: Any) -> Any:
    """``value`` as the setting ``name`` holds it (converted, validated), or ValueError naming it."""
    return getattr(Settings(**{name: value}), name)


def load_settings(environ: Mapping[str, str] | None = None,
                  **overrides: Any) -> tuple[Settings, list[EnvProblem]]:
    """Settings from ``AGENTMETER_*`` variables, then ``overrides`` (the arguments of ``configure``), and the
    variables that could not be used.

    Each variable is parsed and checked on its own: a bad one is left out (its default applies) and listed
    as an :class:`EnvProblem`; the others still apply. ``AGENTMETER_DISABLED`` wins over everything,
    ``configure(enabled=True)`` included. Never raises for a bad variable; raises ValueError naming the
    setting for bad ``overrides``.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[EnvProblem] = []
    disabled, problem = _disabled(env)
    if problem is not None:
        problems.append(problem)
    for var, (name, parse, _doc) in ENV_VARS.items():
        text = env.get(var)
        if text is None or not text.strip():  # set to nothing: unset
            continue
        try:
            values[name] = _check_field(name, parse(text))
        except ValueError as exc:
            message = str(exc) if var in str(exc) else f"{var}={text!r}: {exc}"
            problems.append(EnvProblem(var, message))
    sink_names = env.get("AGENTMETER_SINKS", "").strip()
    if sink_names and "sinks" not in overrides:
        from .sinks import sinks_from_names  # the sinks package: when AGENTMETER_SINKS is set

        try:
            values["sinks"] = tuple(sinks_from_names([n.strip() for n in sink_names.split(",") if n.strip()]))
        except Exception as exc:  # a sink's own check (a bad URI, a missing library): that variable fails
            message = str(exc) if "AGENTMETER_" in str(exc) else f"AGENTMETER_SINKS={sink_names!r}: {exc}"
            problems.append(EnvProblem("AGENTMETER_SINKS", message))
    for key, value in overrides.items():
        if value is None and key != "sinks":
            continue
        values[key] = value
    if "sinks" in values and values["sinks"] is not None:
        if not isinstance(values["sinks"], Sequence) or isinstance(values["sinks"], (str, bytes)):
            raise ValueError("sinks must be a list of sink instances")
        values["sinks"] = tuple(values["sinks"])
    known = set(attrs.fields_dict(Settings))
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; accepted: {sorted(known)}")
    if disabled:
        values["enabled"] = False
    if problems:
        from ._scrub import scrub  # a sink's message may quote a connection string

        problems = [EnvProblem(p.variable, scrub(p.message)) for p in problems]
    return Settings(**values), problems


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``AGENTMETER_*`` variables, then ``overrides`` (the arguments of ``configure``).

    Strict, for ``configure()``: raises ValueError naming every bad variable, unless agentmeter is disabled
    (``AGENTMETER_DISABLED``), in which case they are only warned about: the kill switch never fails.
    """
    settings, problems = load_settings(environ, **overrides)
    if problems:
        if settings.enabled:
            raise ValueError("; ".join(p.message for p in problems))
        warn_problems(problems)
    return settings


def warn_problems(problems: Sequence[EnvProblem]) -> None:
    """One logged warning per bad variable, naming it (rate-limited per variable). Never raises."""

    for p in problems:
        effect = ("taken as on: agentmeter is disabled" if p.variable == "AGENTMETER_DISABLED"
                  else "ignored; its default applies")
        _guard.warn(f"config.env.{p.variable}", f"invalid environment variable {p.variable} {effect}",
                    variable=p.variable, error=p.message)
