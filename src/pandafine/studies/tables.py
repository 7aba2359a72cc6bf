"""Tables of the studies as text: CSV cells with 6 significant digits, Markdown rows rounded for reading.

Shared by :mod:`~pandafine.studies.ablation`, :mod:`~pandafine.studies.design_space` and
:mod:`~pandafine.studies.precision`. A value that does not apply (None, NaN, inf) is an empty CSV
cell and a ``missing`` Markdown cell.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Mapping, Sequence


def _absent(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def csv_cell(v: Any) -> str:
    """A CSV cell: floats with 6 significant digits, absent values empty."""
    if _absent(v):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def csv_text(records: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``records`` as CSV text with a ``columns`` header, one row per record."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in records:
        w.writerow([csv_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def num(v: Any, spec: str, missing: str = "") -> str:
    """``format(v, spec)``, or ``missing`` for an absent value."""
    return missing if _absent(v) else format(v, spec)


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] | None = None) -> list[str]:
    """The lines of a Markdown table; ``align`` gives each column's separator cell (default ``---``)."""
    sep = "|" + "|".join(align) + "|" if align is not None else "|" + "---|" * len(head)
    return ["| " + " | ".join(head) + " |", sep] + ["| " + " | ".join(r) + " |" for r in rows]
