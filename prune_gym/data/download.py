"""Verified downloads: fetch to a temporary file, check its sha256, then rename into place.

Used for both data archives and checkpoints, so it depends on nothing else in prune-gym
(the error class to raise is the caller's choice). A half-written, interrupted or
tampered download never appears under the destination name: the bytes go to a
``.part`` file beside it, which is removed on any failure. ``file://`` URLs work, which
is how mirrors and the tests use it. urllib (standard library) is enough for one HTTPS
GET; no extra dependency is worth it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from prune_gym.errors import InvalidArgumentError, PruneGymError

__all__ = ["check_sha256_arg", "download_file", "file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256_arg(sha256: str) -> str:
    """A lower-case hex digest (full, or a prefix of at least 8 characters)."""
    sha = str(sha256).lower()
    if len(sha) < 8 or len(sha) > 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InvalidArgumentError(
            f"sha256={sha256!r} must be a hex digest (64 characters, or a prefix of at least 8)"
        )
    return sha


def download_file(
    url: str, dest: str | os.PathLike, sha256: str, *,
    error: type[PruneGymError], timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is already there.

    Args:
        url: Where to fetch from (``https://``, ``http://`` or ``file://``).
        dest: Final path of the file; its folder is created.
        sha256: Expected digest (full, or a prefix of at least 8 hex characters).
        error: The :class:`PruneGymError` subclass to raise (``DataError`` for data,
            ``CheckpointError`` for weights), so callers keep their error contract.
        timeout: Socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        error: No network or another download failure (the message says what to fetch
            and where to put it), or a digest that does not match. Nothing is left at
            ``dest`` or beside it.
    """
    expected = check_sha256_arg(sha256)
    dest = Path(dest)
    by_hand = (f"download {url} by hand (sha256 {expected}) and save it as {str(dest)!r}")
    if dest.is_file():
        if file_sha256(dest).startswith(expected):
            return dest
        raise error(
            f"{str(dest)!r} already exists but its sha256 is not {expected}; it is corrupt, "
            "incomplete or another file: delete it and call again"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise error(f"cannot write to {str(dest.parent)!r} ({exc}); choose a writable "
                    "cache_dir (or set PRUNE_GYM_CACHE)") from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if not actual.startswith(expected):
            raise error(
                f"sha256 mismatch for url={url!r}: expected {expected}, got {actual}; the "
                "download is corrupt or the URL serves another file (nothing was saved)"
            )
        os.replace(tmp, dest)
    except PruneGymError:
        raise
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise error(
            f"could not download url={url!r} ({type(exc).__name__}: {reason}); with no "
            f"network, {by_hand}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest
