"""Store locations as they may be printed. Standard library only: the store (store.py) and the remote store
(remote.py) both print them, and neither imports the other for it."""

from __future__ import annotations

from pathlib import Path


def redact(location: str | Path) -> str:
    """``location`` as it may be printed: a URL without its user and password (fsspec accepts
    ``s3://key:secret@bucket/prefix``) and without its query's values (a SAS token). Reports, the
    terminal and error messages echo only this."""
    text = str(location)
    if "://" not in text:
        return text
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(text)
    except ValueError:
        return text.split("://", 1)[0] + "://<redacted>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
