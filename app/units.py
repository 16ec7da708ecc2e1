"""Sizes in words for people: the one byte formatter of the app and the model manager."""
from __future__ import annotations

UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(n: float | None) -> str:
    """A byte count in decimal units, as disks and downloads are sold: "512 B", "40.3 MB"; "?" if unknown."""
    if n is None:
        return "?"
    unit = 0
    while abs(n) >= 999.95 and unit < len(UNITS) - 1:
        n /= 1000
        unit += 1
    return f"{n:.0f} B" if unit == 0 else f"{n:.1f} {UNITS[unit]}"
