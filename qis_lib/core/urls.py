"""Store urls: 'qdrant://h1:6333,h2:6343?replication_factor=2' -> ('qdrant', {...options}).

Which locations a scheme takes (a path, one host, several hosts) comes from the
store's registry entry, so a new store's urls work without editing this module.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlparse

from ..stores.registry import STORES


BOOLS = {"true": True, "false": False}  # '?prefer_grpc=true'


def url_forms() -> list[str]:
    """Every url form of every registered store."""
    return [form for spec in STORES.values() for form in spec.url_forms]


def _nodes(location: str, url: str, scheme: str = "http") -> list[str]:
    urls = []
    for node in location.split(","):
        try:
            parsed = urlparse(f"http://{node}")
            port = parsed.port
        except ValueError:
            parsed, port = None, None
        if parsed is None or not parsed.hostname or port is None:
            raise ValueError(f"bad node {node!r} in {url!r}: expected HOST:PORT")
        urls.append(f"{scheme}://{parsed.hostname}:{port}")
    return urls


def parse_store_url(url: str) -> tuple[str, dict[str, Any]]:
    """The store name and its options from a store url; a bad url is an error listing the valid forms."""
    scheme, sep, rest = url.partition("://")
    tls = {spec.tls_scheme: name for name, spec in STORES.items() if spec.tls_scheme}
    name = tls.get(scheme, scheme)
    if not sep or name not in STORES:
        raise ValueError(f"bad store url {url!r}; use one of: {', '.join(url_forms())}")
    spec = STORES[name]
    location, _, query = rest.partition("?")
    options: dict[str, Any] = {k: int(v) if v.isdigit() else BOOLS.get(v.lower(), v) for k, v in parse_qsl(query)}
    if location.startswith("/"):  # scheme:///path
        if "path" not in spec.locations:
            raise ValueError(f"the {scheme} store takes no path: {url!r}; use one of {spec.url_forms}")
        options["path"] = location
    elif location:
        if not {"host", "hosts"} & set(spec.locations):
            raise ValueError(f"{scheme} runs in-process and takes no host: {url!r}; use one of {spec.url_forms}")
        urls = _nodes(location, url, "https" if scheme in tls else "http")
        if len(urls) > 1:
            if "hosts" not in spec.locations:
                raise ValueError(f"{scheme} takes one server, got {len(urls)} in {url!r}")
            options["urls"] = urls
        else:
            options["url"] = urls[0]
    return name, options
