"""Resident memory and time of loading one model file: `python bench/load_rss.py MODEL.bin [...]`.

Prints a table: file size, load seconds, resident memory after load and the peak. All the files
load in this one process, so later rows include what earlier ones left: pass one file for a clean
figure.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

from engine import load_model


def rss_mib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| file | file MiB | load s | RSS after load MiB | peak MiB |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.models:
        start = time.perf_counter()
        model = load_model(path, threads=args.threads)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"| {os.path.basename(path)} | {os.path.getsize(path) >> 20} | {seconds:.2f} | {rss_mib()} | {peak} |")
        del model


if __name__ == "__main__":
    main()
