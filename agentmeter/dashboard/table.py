"""The dashboard's tables: human column names, units that suit each column, and (optionally) a clickable
row. Its own module so that :mod:`.drill` and the views can both use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from .format import column_name, duration_unit, money_decimals

__all__ = ["table"]


def table(df: pd.DataFrame, columns: Sequence[str] | None = None, key: str | None = None,
           select: bool = False) -> int | None:
    """A table with human column names: durations in the unit that suits the column (ms, s or min), money
    with the decimals its smallest amount needs, rates as percentages. ``columns``: the ones shown, in order
    (all by default). With ``select`` a row can be clicked: returns the position of the clicked row (None
    when none is)."""
    shown = df.copy()
    config: dict[str, Any] = {}
    for c in shown.columns:
        label = column_name(str(c))
        if str(c).endswith("_ms"):
            unit, div = duration_unit(shown[c].max() if len(shown) else None)
            shown[c] = shown[c] / div
            config[c] = st.column_config.NumberColumn(f"{label} ({unit})", format="%,.1f" if unit == "ms" else "%,.2f")
        elif str(c).endswith("_usd"):
            config[c] = st.column_config.NumberColumn(label, format=f"$%,.{money_decimals(shown[c])}f")
        elif str(c).endswith("_rate"):
            config[c] = st.column_config.NumberColumn(label, format="percent")
        elif pd.api.types.is_datetime64_any_dtype(shown[c]):
            config[c] = st.column_config.DatetimeColumn(label, format="YYYY-MM-DD HH:mm:ss")
        elif pd.api.types.is_bool_dtype(shown[c]):
            config[c] = st.column_config.CheckboxColumn(label)
        elif pd.api.types.is_numeric_dtype(shown[c]):
            config[c] = st.column_config.NumberColumn(label, format="%,d" if pd.api.types.is_integer_dtype(
                shown[c]) else "%,.2f")
        else:
            config[c] = st.column_config.TextColumn(label)
    if not select:
        st.dataframe(shown, hide_index=True, column_config=config, column_order=columns, width="stretch", key=key)
        return None
    event: Any = st.dataframe(shown, hide_index=True, column_config=config, column_order=columns, width="stretch",
                              key=key, on_select="rerun", selection_mode="single-row")
    try:  # a mapping: {"selection": {"rows": [...], ...}}
        rows = list(event["selection"]["rows"])
    except (KeyError, TypeError):
        rows = []
    return int(rows[0]) if rows else None
