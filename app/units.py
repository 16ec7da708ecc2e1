"""Sizes in words for people (the one byte formatter of the app and the model manager) and free memory."""
from __future__ import annotations

import os

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


def free_ram_bytes() -> int | None:
    """Memory the OS can give us now (Linux MemAvailable, else free pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
