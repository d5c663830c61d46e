"""Put any frame into the shape a column spec declares (:func:`conform`, re-exported by
:mod:`agentmeter.queries.base`). Imports pandas only when called."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd  # pandas: ~200 ms, only for the dashboard's frames

__all__ = ["conform"]

#: Column kinds of a spec: ``((name, kind), ...)``
Spec = tuple[tuple[str, str], ...]


def conform(frame: pd.DataFrame | Iterable[Mapping[str, Any]], spec: Spec) -> pd.DataFrame:
    """``frame`` (or rows as dicts) with exactly the spec's columns in order, each coerced to its kind:
    ``str`` -> object (None for null), ``int`` -> int64 (null -> 0), ``Int`` -> nullable Int64,
    ``float`` -> float64, ``time`` -> datetime64[ns, UTC] (ISO strings, datetimes, or timestamps),
    ``bool`` -> bool, ``json`` -> object: canonical JSON text (keys sorted) of JSON text as the SQL stores
    keep it (MongoDB's source encodes its values first), None for null. Missing columns raise ``KeyError``;
    extra columns are dropped.
    """
    import pandas as pd  # pandas: ~200 ms, only for the dashboard's frames

    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(list(frame))
    if df.empty and not len(df.columns):
        df = pd.DataFrame({name: [] for name, _ in spec})
    out: dict[str, Any] = {}
    for name, kind in spec:
        col = df[name]
        if kind == "str":
            out[name] = _to_str(col)
        elif kind == "int":
            out[name] = pd.to_numeric(col, errors="coerce").fillna(0).round().astype("int64")
        elif kind == "Int":
            out[name] = pd.to_numeric(col, errors="coerce").round().astype("Int64")
        elif kind == "float":
            out[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif kind == "time":
            out[name] = _to_time(col)
        elif kind == "bool":
            out[name] = col.map(lambda v: bool(v) if not _is_null(v) else False).astype(bool)
        elif kind == "json":
            out[name] = pd.Series([_json(v) for v in col], index=df.index, dtype=object)
        else:  # pragma: no cover - specs are constants
            raise ValueError(f"unknown column kind {kind!r}")
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _json(v: Any) -> str | None:
    import json  # only for JSON columns

    if _is_null(v):
        return None
    try:
        value = json.loads(v) if isinstance(v, (str, bytes)) else v
    except ValueError:  # not JSON text (a store written by something else): keep the text as a string
        value = v if isinstance(v, str) else v.decode("utf-8", "replace")
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _is_null(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN, NaT, pd.NA compare unequal to themselves
    except (TypeError, ValueError):
        return False


def _texts(col: pd.Series) -> bool:
    """True when every value of ``col`` is a string or null (a driver's text column): checked in C, no
    Python loop over the values."""
    import pandas as pd  # pandas: ~200 ms, only for the dashboard's frames

    return isinstance(col.dtype, pd.StringDtype) or (
        col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"))


def _to_str(col: pd.Series) -> pd.Series:
    """``col`` as object strings, None for null (other values through ``str``)."""
    import pandas as pd  # pandas: ~200 ms, only for the dashboard's frames

    if _texts(col):  # strings and nulls (most columns of every source): no loop over the values
        values = col.astype(object)
        return values.where(values.notna(), None)
    return pd.Series([None if _is_null(v) else str(v) for v in col], index=col.index, dtype=object)


def _to_time(col: pd.Series) -> pd.Series:
    import pandas as pd  # pandas: ~200 ms, only for the dashboard's frames

    if len(col) and _texts(col):  # ISO strings and nulls (the SQL stores): parsed in C
        s = pd.to_datetime(col.astype(object), utc=True, format="ISO8601")
        return s.astype("datetime64[ns, UTC]").reset_index(drop=True)
    values = [None if _is_null(v) else v for v in col]
    if not values:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    if all(v is None or isinstance(v, str) for v in values):
        s = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    else:
        s = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    return s.astype("datetime64[ns, UTC]").reset_index(drop=True)
