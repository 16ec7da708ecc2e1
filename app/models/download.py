"""The download engine: one file over HTTP(S) into `<name>.part`, resumable, hashed, verified.

`Downloader.download()` blocks; run it in a worker thread (the CLI uses a
`threading.Thread`, the GUI a QThread whose slots forward `on_progress` to a signal). The
engine never touches the GUI: it reports through a plain callback and is stopped through
a `DownloadControl` that any thread may pause or cancel.

What happens to the bytes:
- they are appended to `dest.part` and fed to SHA-256 as they arrive; on resume the hash is
  rebuilt from the `.part` prefix first, then the transfer continues with `Range: bytes=N-`
  and `If-Range: <the ETag the .part's bytes came with>`;
- a resume never splices two versions of a file: a server whose file changed answers the
  If-Range with 200 and the whole new file, which replaces the `.part` from byte 0; a 206 whose
  ETag is not the `.part`'s (a server ignoring If-Range) throws the `.part` away and restarts;
  a `.part` with neither a recorded ETag nor an expected SHA-256 to verify against is not
  resumed at all;
- a server that answers 200 to a Range request gets the file from the start again; a 416
  (our `.part` reaches past the server's file) throws the stale `.part` away and restarts;
- a sidecar `dest.part.json` records what the `.part` is supposed to become (URL, size,
  SHA-256, the ETag its bytes came with and the caller's metadata), so a `.part` of some other
  file version is never resumed and a crash between rename and bookkeeping can be repaired
  (see manager.recover);
- when the body is complete the digest is compared with the expected one; a mismatch
  deletes the `.part` and says so, a match fsyncs and renames it into place atomically.
Network errors (refused, dropped, 5xx, no bytes for `stall_timeout` seconds) are retried
with exponential backoff, resuming where the `.part` ends.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.models.atomic import replace_durably, write_json_atomic
from app.models.connection import AbortHandle, HttpClient, HttpStatusError, NetworkError, RedirectRefused, StallError
from app.units import human_bytes

CHUNK = 256 * 1024
HASH_CHUNK = 4 * 1024 * 1024
PROGRESS_INTERVAL = 0.1  # seconds between progress callbacks while bytes flow


class DownloadError(Exception):
    """The download failed; the message says why and what was kept or deleted."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not hash (or measure) to what the catalog or hub promised."""


class DiskFullError(DownloadError):
    """Not enough free space before starting, or the disk filled up while writing."""


class RefusedFile(DownloadError):
    """The bytes arrived and match their SHA-256, but the engine's reader refuses the file."""


class DownloadStopped(DownloadError):
    """Paused (the .part is kept for a later resume) or cancelled (the .part is deleted)."""

    def __init__(self, message: str, kept_partial: bool):
        super().__init__(message)
        self.kept_partial = kept_partial


@dataclass
class Progress:
    """One progress report. `total` and `eta` are None while unknown; speed is bytes/s.

    phase: "checking" (re-hashing an existing .part), "downloading", "retrying" (message says
    why and when), "verifying", "done".
    """
    done: int
    total: int | None
    speed: float
    eta: float | None
    phase: str
    message: str = ""
    file: str = ""   # the destination file name, so one callback can follow several files


@dataclass
class Expected:
    """What the finished file must be; None means not known in advance."""
    size: int | None = None
    sha256: str | None = None


class DownloadControl:
    """Pause or cancel a running download from any thread.

    pause() stops it and keeps the .part for a resume; cancel() stops it and deletes the
    .part. Either interrupts a blocked network read at once.
    """

    def __init__(self):
        self._event = threading.Event()
        self.discard = False
        self.abort_handle = AbortHandle(self._event.is_set)

    def pause(self) -> None:
        self._event.set()
        self.abort_handle.abort()

    def cancel(self) -> None:
        self.discard = True
        self.pause()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait, waking early if the download is stopped."""
        self._event.wait(seconds)


class SpeedMeter:
    """Bytes per second over the last few seconds, for the speed and ETA display."""

    def __init__(self, window: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> float:
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        # below half a second of history the rate is noise (the first chunk arrives "instantly")
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 0.5 else 0.0


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def read_sidecar(dest: Path) -> dict | None:
    """The sidecar of a download into `dest`, or None when absent or unreadable."""
    try:
        with open(sidecar_path(dest), encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def discard_partial(dest: Path) -> None:
    part_path(dest).unlink(missing_ok=True)
    sidecar_path(dest).unlink(missing_ok=True)


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None,
                hasher=None, stop: Callable[[], bool] | None = None):
    """Hash a file in chunks; returns the hasher (so callers may continue it) and the length."""
    hasher = hasher or hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while True:
            if stop is not None and stop():
                break
            block = f.read(HASH_CHUNK)
            if not block:
                break
            hasher.update(block)
            done += len(block)
            if on_bytes is not None:
                on_bytes(done)
    return hasher, done


class _Restart(Exception):
    """Internal: the .part was found stale and removed; start again from byte 0."""


@dataclass
class _State:
    """The running hash of the bytes in the .part file, and the ETag of the version they are from."""
    hasher: object = field(default_factory=hashlib.sha256)
    length: int = 0
    etag: str | None = None


class Downloader:
    """Downloads single files through an HttpClient with resume, retries and verification."""

    def __init__(self, client: HttpClient, *, stall_timeout: float = 30.0, retries: int = 5,
                 backoff: float = 1.0, backoff_max: float = 60.0, reserve_bytes: int = 64 * 1024 * 1024):
        client.timeout = stall_timeout  # the socket timeout is the "no bytes for N seconds" rule
        self.client = client
        self.stall_timeout = stall_timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.reserve_bytes = reserve_bytes

    # Seams that tests replace to simulate a full disk.
    @staticmethod
    def free_space(folder: Path) -> int:
        return shutil.disk_usage(folder).free

    @staticmethod
    def open_part(path: Path, mode: str):
        return open(path, mode)

    def download(self, url: str, dest: Path, expected: Expected | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 control: DownloadControl | None = None, meta: dict | None = None,
                 on_complete: Callable[[Path, str], None] | None = None,
                 check: Callable[[Path], None] | None = None) -> str:
        """Download `url` to `dest` and return its SHA-256 (hex).

        `meta` is stored in the sidecar for crash recovery; `on_complete(dest, sha256)` runs
        after the rename and before the sidecar is removed (the manager records the file in
        its manifest there). `check(part)` may inspect the verified bytes before the rename
        and refuse them by raising DownloadError (the partial is then deleted).
        Raises DownloadError and its subclasses.
        """
        dest = Path(dest)
        expected = expected or Expected()
        control = control or DownloadControl()
        def report(progress: Progress) -> None:
            if on_progress is not None:
                progress.file = dest.name
                on_progress(progress)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(dest)
        etag = self._adopt_or_discard_partial(dest, url, expected)
        if expected.size is not None:
            self._check_space(dest.parent, expected.size - _part_size(part))
        sidecar = {"url": url, "size": expected.size, "sha256": expected.sha256, "meta": meta or {}, "etag": etag}
        write_json_atomic(sidecar_path(dest), sidecar)

        def note_version(state: _State) -> None:
            """Record in the sidecar which version of the file the .part's bytes come from."""
            if sidecar["etag"] != state.etag:
                sidecar["etag"] = state.etag
                write_json_atomic(sidecar_path(dest), sidecar)

        state = _State(etag=etag)
        failures = 0
        while True:
            self._check_stop(control, dest)
            try:
                self._sync_hash(part, state, expected, report, control)
                self._check_stop(control, dest)
                if expected.size is not None and state.length == expected.size:
                    break  # the .part already holds the whole file
                if expected.size is not None:
                    self._check_space(dest.parent, expected.size - state.length)
                if self._transfer(url, part, state, expected, report, control, note_version):
                    break
            except _Restart:
                state = _State()
                continue
            except RedirectRefused as exc:
                raise DownloadError(f"download of {url} failed: {exc}") from exc
            except (NetworkError, HttpStatusError) as exc:
                if control.stopped:
                    self._check_stop(control, dest)
                if isinstance(exc, HttpStatusError) and not exc.retryable:
                    raise DownloadError(f"download of {url} failed: {exc}") from exc
                failures += 1
                if failures > self.retries:
                    kept = f"; {state.length} bytes kept in {part.name} for a resume" if part.exists() else ""
                    raise DownloadError(f"download of {url} failed after {failures} attempts: "
                                        f"{_describe(exc, self.stall_timeout)}{kept}") from exc
                delay = min(self.backoff * 2 ** (failures - 1), self.backoff_max)
                report(Progress(state.length, expected.size, 0.0, None, "retrying",
                                f"{_describe(exc, self.stall_timeout)}; retry {failures}/{self.retries} "
                                f"in {delay:.3g} s, resuming at byte {_part_size(part)}"))
                control.sleep(delay)
        return self._finish(dest, state, expected, report, on_complete, check)

    def _adopt_or_discard_partial(self, dest: Path, url: str, expected: Expected) -> str | None:
        """Keep an existing .part only if its sidecar says it is the same file we want now.

        Returns the ETag its bytes came with (None when unknown or when nothing was kept).
        Without an expected SHA-256, only the ETag can tell a later version of the file from
        the one the .part started: a .part without one is not resumed.
        """
        part = part_path(dest)
        if not part.exists():
            return None
        side = read_sidecar(dest)
        etag = side.get("etag") if side is not None else None
        etag = etag if isinstance(etag, str) and strong_etag(etag) == etag else None
        same = side is not None and (
            (expected.sha256 is not None and side.get("sha256") == expected.sha256)
            or (expected.sha256 is None and etag is not None
                and side.get("url") == url and side.get("size") == expected.size))
        if not same:
            discard_partial(dest)
            return None
        return etag

    def _check_stop(self, control: DownloadControl, dest: Path) -> None:
        if not control.stopped:
            return
        if control.discard:
            discard_partial(dest)
            raise DownloadStopped(f"download of {dest.name} cancelled; partial file deleted", False)
        size = _part_size(part_path(dest))
        raise DownloadStopped(f"download of {dest.name} paused; {size} bytes kept in "
                              f"{part_path(dest)} for a resume", True)

    def _sync_hash(self, part: Path, state: _State, expected: Expected, report, control) -> None:
        """Make `state` the hash of exactly the bytes now in the .part file."""
        size = _part_size(part)
        if size == state.length:
            return
        if expected.size is not None and size > expected.size:
            part.unlink()
            state.hasher, state.length, state.etag = hashlib.sha256(), 0, None
            return
        def tick(done):
            report(Progress(done, size, 0.0, None, "checking", f"checking the {size} bytes already downloaded"))
        hasher, length = sha256_file(part, tick, stop=lambda: control.stopped)
        state.hasher, state.length = hasher, length

    def _check_space(self, folder: Path, needed: int) -> None:
        free = self.free_space(folder)
        if needed + self.reserve_bytes > free:
            raise DiskFullError(f"not enough free space in {folder}: the download needs {human_bytes(needed)} "
                                f"(+{human_bytes(self.reserve_bytes)} reserve) but only {human_bytes(free)} is free")

    def _transfer(self, url: str, part: Path, state: _State, expected: Expected, report, control,
                  note_version) -> bool:
        """One HTTP request appending to the .part; True when the body ended complete."""
        offset = state.length
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if state.etag is not None:
                # the server sends the rest only if the file is still this version, else all of it
                headers["If-Range"] = state.etag
        try:
            resp = self.client.open("GET", url, headers=headers, on_open=control.abort_handle.attach)
        except HttpStatusError as exc:
            if exc.status == 416 and offset:
                return self._range_not_satisfiable(exc, part, state, report)
            raise
        with resp:
            total = None
            length = _int(resp.header("Content-Length"))
            etag = strong_etag(resp.header("ETag"))
            if resp.status == 206:
                start, total = _content_range(resp.header("Content-Range"))
                if state.etag is not None and etag != state.etag:
                    # a server that ignored If-Range: these bytes may be from another version
                    report(Progress(0, expected.size, 0.0, None, "retrying",
                                    f"the file on the server changed (ETag {etag} instead of {state.etag}); "
                                    "starting again from the beginning"))
                    part.unlink(missing_ok=True)
                    raise _Restart()
                if start != offset:
                    raise NetworkError(f"server resumed at byte {start}, not at {offset}")
            elif resp.status == 200:
                if offset:
                    why = ("the file on the server changed" if "If-Range" in headers and etag != state.etag
                           else "server ignored the resume request")
                    report(Progress(0, expected.size, 0.0, None, "retrying", f"{why}; starting from the beginning"))
                    offset = 0
                    state.hasher, state.length = hashlib.sha256(), 0
                state.etag = etag
                note_version(state)
                total = length
            else:
                raise NetworkError(f"unexpected HTTP {resp.status} {resp.reason} from {resp.url}")
            if total is None and length is not None:
                total = offset + length
            if expected.size is not None and total is not None and total != expected.size:
                raise ChecksumMismatch(f"{resp.url} serves {total} bytes but {expected.size} were expected; "
                                       "nothing installed")
            if total is not None:
                self._check_space(part.parent, total - offset)
            total = total if total is not None else expected.size
            self._receive(resp, part, state, offset, total, report, control)
        control.abort_handle.detach()
        if control.stopped:
            return False
        if total is not None and state.length < total:
            raise NetworkError(f"connection closed after {state.length} of {total} bytes")
        return True

    def _receive(self, resp, part: Path, state: _State, offset: int, total, report, control) -> None:
        meter = SpeedMeter()
        meter.add(offset)
        last_report = 0.0
        with self.open_part(part, "ab" if offset else "wb") as f:
            try:
                while not control.stopped:
                    try:
                        chunk = resp.read_chunk(CHUNK)
                    except NetworkError:
                        if control.stopped:
                            break
                        raise
                    if not chunk:
                        break
                    if total is not None and state.length + len(chunk) > total:
                        raise NetworkError(f"server sent more than the announced {total} bytes")
                    f.write(chunk)
                    state.hasher.update(chunk)
                    state.length += len(chunk)
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_INTERVAL or state.length == total:
                        last_report = now
                        speed = meter.add(state.length)
                        eta = (total - state.length) / speed if total is not None and speed > 0 else None
                        report(Progress(state.length, total, speed, eta, "downloading"))
                f.flush()
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
                    raise DiskFullError(f"disk full while writing {part} after {state.length} bytes; "
                                        "free some space and download again to resume") from exc
                raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc

    def _range_not_satisfiable(self, exc: HttpStatusError, part: Path, state: _State, report) -> bool:
        """416: either our .part is already the whole file, or it is stale and must go."""
        _, total = _content_range(exc.headers.get("Content-Range"))
        if total is not None and total == state.length:
            return True
        report(Progress(0, total, 0.0, None, "retrying",
                        f"the server has no byte {state.length} (HTTP 416): the partial file is stale, "
                        "starting again from the beginning"))
        part.unlink(missing_ok=True)
        raise _Restart()

    def _finish(self, dest: Path, state: _State, expected: Expected, report, on_complete, check) -> str:
        part = part_path(dest)
        digest = state.hasher.hexdigest()
        report(Progress(state.length, state.length, 0.0, 0.0, "verifying",
                        f"verifying SHA-256 {expected.sha256}" if expected.sha256 else
                        "no SHA-256 known to compare; checking size and content"))
        if expected.size is not None and state.length != expected.size:
            discard_partial(dest)
            raise ChecksumMismatch(f"{dest.name}: got {state.length} bytes, expected {expected.size}; "
                                   "the partial file was deleted and nothing was installed")
        if expected.sha256 is not None and digest != expected.sha256:
            discard_partial(dest)
            raise ChecksumMismatch(f"{dest.name}: SHA-256 {digest} does not match the expected "
                                   f"{expected.sha256}; the partial file was deleted and nothing was installed")
        if check is not None:
            try:
                check(part)
            except DownloadError:
                discard_partial(dest)
                raise
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        replace_durably(part, dest)
        if on_complete is not None:
            on_complete(dest, digest)
        sidecar_path(dest).unlink(missing_ok=True)
        report(Progress(state.length, state.length, 0.0, 0.0, "done"))
        return digest


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def strong_etag(value: str | None) -> str | None:
    """The ETag header as sent, if it is a strong validator (If-Range accepts no weak one)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/") or len(value) < 2 or not (value[0] == value[-1] == '"'):
        return None
    return value


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse 'bytes START-END/TOTAL' or 'bytes */TOTAL' into (START, TOTAL)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = _int(span.partition("-")[0]) if span != "*" else None
    return start, _int(total)


def _describe(exc: Exception, stall_timeout: float) -> str:
    if isinstance(exc, StallError):
        return f"stalled: no data for {stall_timeout:g} s ({exc})"
    return str(exc)


def failure_cause(exc: BaseException) -> str:
    """A failed download's cause in a few words for its row in the model list ("no connection
    to the hub", "not found", ...): the first transport or status error in the exception's chain."""
    seen = exc
    while seen is not None:
        if getattr(seen, "row_cause", ""):     # an error that says it in few words itself
            return seen.row_cause
        if isinstance(seen, (NetworkError, RedirectRefused)):
            return "no connection to the hub"
        if isinstance(seen, HttpStatusError):
            return {404: "not found", 401: "access refused", 403: "access refused"}.get(
                seen.status, f"the hub answered HTTP {seen.status}")
        if isinstance(seen, DiskFullError):
            return "disk full"
        if isinstance(seen, ChecksumMismatch):
            return "damaged download (checksum mismatch)"
        if isinstance(seen, RefusedFile):
            return "not a model NeoX Writer runs"
        if isinstance(seen, OSError) and not isinstance(seen, DownloadError):
            return "no connection to the hub" if isinstance(seen, ConnectionError) else "cannot write the file"
        seen = seen.__cause__ or seen.__context__
    return "failed"
