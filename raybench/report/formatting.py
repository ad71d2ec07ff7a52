"""How the report writes values: table cells, intervals and configuration labels."""

from __future__ import annotations

import math

import pandas as pd


def is_missing(value) -> bool:
    """None, pandas' NA or NaN: shown as '–'."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def fmt(value, kind: str) -> str:
    """One cell: kinds int, sint (signed), acc, sacc (signed), sec, ratio, sfloat (signed), pct, spct, bool, text."""
    if is_missing(value):
        return "–"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "sint":
        return "0" if value == 0 else f"{int(value):+,}"
    if kind == "acc":
        return f"{value:.3f}"
    if kind == "sacc":
        return f"{value:+.3f}"
    if kind == "sec":
        if value < 1:
            return f"{value:.3f}"
        if value < 10:
            return f"{value:.2f}"
        return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    if kind == "ratio":
        return f"×{value:.2g}" if value < 0.1 else f"×{value:.2f}"
    if kind == "sfloat":
        return f"{value:+.2f}"
    if kind == "pct":
        return f"{100 * value:+.1f}%"
    if kind == "spct":
        return f"{100 * value:+.1f} pp"
    if kind == "bool":
        return "yes" if value else "no"
    return str(value)


def fmt_interval(mean, low, high, kind: str = "acc") -> str:
    """'0.812 [0.790, 0.834]' for several seeds, '0.812' for one."""
    if is_missing(low):
        return fmt(mean, kind)
    return f"{fmt(mean, kind)} [{fmt(low, kind)}, {fmt(high, kind)}]"


def config_label(model: str, pretrained: bool) -> str:
    """A configuration as tables and legends name it."""
    return f"{model} (pretrained)" if pretrained else model
