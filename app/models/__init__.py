"""The model manager: catalog of published ggml files, downloads, imports, verification.

Headless (no Qt): the GUI wraps `ModelManager` calls in its own worker thread and forwards
the `on_progress(Progress)` callbacks to signals; `DownloadControl` pauses or cancels.
"""
from app.models.catalog import Catalog, CatalogEntry
from app.models.download import (ChecksumMismatch, DiskFullError, DownloadControl, DownloadError, DownloadStopped,
                                 Progress)
from app.models.manager import DownloadResult, ModelError, ModelManager, ModelStatus, UnknownModel, UsageError, VerifyResult
from app.models.manifest import InstalledModel

__all__ = ["Catalog", "CatalogEntry", "ChecksumMismatch", "DiskFullError", "DownloadControl", "DownloadError",
           "DownloadStopped", "DownloadResult", "InstalledModel", "ModelError", "ModelManager", "ModelStatus",
           "Progress", "UnknownModel", "UsageError", "VerifyResult"]
