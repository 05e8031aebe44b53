"""URLs of the servers (grading, LLM): a leaf module every layer may import."""

from __future__ import annotations

from urllib.parse import urlsplit


def normalize_url(url: str) -> str:
    """Validate `http(s)://host[:port][/path]` and drop a trailing slash; raise ValueError."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http://host:port URL")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if port == 0 or parts.query or parts.fragment or parts.username or any(c.isspace() for c in url):
        raise ValueError(f"{url!r} is not a plain http://host:port URL")
    return url.rstrip("/")
