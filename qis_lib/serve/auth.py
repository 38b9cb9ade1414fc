"""Who may call the routing service: keys, the role and agent each one acts as, and its limits.

    python -m qis_lib.serve --store URL --auth keys.json

The file (JSON):

    {"defaults": {"agent": {"max_concurrent": 4, "rate_per_s": 20, "burst": 40}},
     "keys": [
       {"id": "alice-laptop", "role": "agent", "agent": "alice", "key_sha256": "9f86d0..."},
       {"id": "dashboard", "role": "reader", "key": "a-long-random-secret"},
       {"id": "ops", "role": "admin", "key_sha256": "...", "rate_per_s": null}]}

Each key has an `id` (a name for logs and the audit file, never the secret), a `role`
(`ROLES`), for an agent key the `agent` id it acts as, and the secret as `key` or as its
SHA-256 hex digest `key_sha256` (so the file need hold no secret). `max_concurrent`,
`rate_per_s` and `burst` limit one key (null: no limit; a rate without a burst allows two
seconds' worth at once); absent, they come from
"defaults" for the key's role, else from `DEFAULT_LIMITS`. A key is looked up by the digest of
what the caller sent, then compared with `hmac.compare_digest`; it is never logged.

A file that breaks a rule (an unknown role, a key listed twice, a bad digest, an agent key
without an agent...) is a `ValueError` naming the entry: at start the service does not
start; on a reload (`AuthFile.reload`, SIGHUP or a changed file) the old keys stay and the
log says why.

    python -m qis_lib.serve.auth new --id alice-laptop --role agent --agent alice

prints a fresh secret (once) and the entry to paste into the file, with its digest only.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("qis_lib.serve")

ROLES = ("agent", "reader", "admin")
# What each role may do; an agent's deposits, synthesis, deletes and purges are also limited
# to its own agent id (qis_lib.serve.gate). "vectors" is the store's own API (/v1/vectors/...).
ACTIONS = {
    "agent": frozenset({"deposit", "synthesize", "query", "get", "delete", "purge", "embed", "stats", "whoami"}),
    "reader": frozenset({"query", "get", "stats", "whoami"}),
    "admin": frozenset({"deposit", "synthesize", "query", "get", "delete", "purge", "embed", "stats", "whoami",
                        "vectors"}),
}
ID = re.compile(r"^[A-Za-z0-9._@:-]{1,64}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MIN_KEY_CHARS = 16
LIMIT_FIELDS = ("max_concurrent", "rate_per_s", "burst")
ENTRY_FIELDS = ("id", "role", "agent", "key", "key_sha256", *LIMIT_FIELDS)


BURST_S = 2.0  # a rate given without a burst allows this many seconds' worth of requests at once


@dataclass(frozen=True)
class Limits:
    """Per key: requests in flight at once, and a token bucket (`rate_per_s`, `burst`). None: no limit."""

    max_concurrent: int | None = None
    rate_per_s: float | None = None
    burst: int | None = None


# An agent is one process asking now and then; a reader a dashboard. Admin keys load data in
# bulk and run the test harnesses: no limit unless the file sets one.
DEFAULT_LIMITS = {"agent": Limits(8, 20.0, 40), "reader": Limits(8, 20.0, 40), "admin": Limits()}


@dataclass(frozen=True)
class Credential:
    """One key of the file: who it is (`id`), its role, the agent it acts as, its limits."""

    id: str
    role: str
    agent: str | None
    digest: bytes = field(repr=False)
    limits: Limits = Limits()

    def may(self, action: str) -> bool:
        return action in ACTIONS[self.role]


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Credentials:
    """The keys a service accepts, looked up by the SHA-256 of what a caller sends."""

    def __init__(self, entries: list[Credential]):
        self.entries = list(entries)
        self._by_digest = {c.digest: c for c in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, presented: str) -> Credential | None:
        """The credential whose key is `presented`, or None (compared in constant time)."""
        wanted = digest_of(presented)
        found = self._by_digest.get(wanted)
        if found is not None and hmac.compare_digest(found.digest, wanted):
            return found
        return None

    @classmethod
    def single_admin(cls, key: str) -> "Credentials":
        """`--api-key K`: one admin key, no limits."""
        if not isinstance(key, str) or not key:
            raise ValueError("--api-key must be a non-empty string")
        if len(key) < MIN_KEY_CHARS:
            log.warning("the API key is shorter than %d characters: easy to guess", MIN_KEY_CHARS)
        return cls([Credential("api-key", "admin", None, digest_of(key))])

    @classmethod
    def parse(cls, data: Any, where: str = "the auth file") -> "Credentials":
        """Credentials from the file's JSON value; a broken rule is a ValueError naming the entry."""
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError(f'{where}: expected a JSON object with a "keys" list, got {_short(data)}')
        unknown = sorted(set(data) - {"keys", "defaults"})
        if unknown:
            raise ValueError(f'{where}: unknown top-level field(s) {unknown}; the file holds "keys" and "defaults"')
        defaults = _defaults(data.get("defaults", {}), where)
        entries: list[Credential] = []
        ids: dict[str, int] = {}
        digests: dict[bytes, int] = {}
        for i, raw in enumerate(data["keys"]):
            name = f"{where}: keys[{i}]" + (f" (id {raw.get('id')!r})" if isinstance(raw, dict) and "id" in raw else "")
            cred = _entry(raw, name, defaults)
            if cred.id in ids:
                raise ValueError(f"{name}: id {cred.id!r} is used by keys[{ids[cred.id]}] too; ids must be unique")
            if cred.digest in digests:
                raise ValueError(f"{name}: the same key is listed at keys[{digests[cred.digest]}]; "
                                 "each key must be listed once")
            ids[cred.id], digests[cred.digest] = i, i
            entries.append(cred)
        if not entries:
            raise ValueError(f"{where}: no keys: the service would refuse every request")
        return cls(entries)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Credentials":
        where = f"auth file {path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from None
        return cls.parse(data, where)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _limits(raw: dict, name: str, base: Limits) -> Limits:
    """`base` with the limit fields `raw` sets (null: no limit)."""
    values = dict(vars(base))
    for key in LIMIT_FIELDS:
        if key not in raw:
            continue
        value = raw[key]
        if value is None:
            values[key] = None
            continue
        integer = key != "rate_per_s"
        number = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
        if not number or not math.isfinite(value) or value < (1 if integer else 1e-9):
            kind = "an int >= 1" if integer else "a number > 0"
            raise ValueError(f"{name}: {key} must be {kind} or null (no limit), got {_short(value)}")
        values[key] = value if integer else float(value)
    if values["rate_per_s"] is not None and (values["burst"] is None or ("rate_per_s" in raw and "burst" not in raw)):
        values["burst"] = max(1, math.ceil(BURST_S * values["rate_per_s"]))  # a rate given alone: its own burst
    return Limits(**values)


def _defaults(raw: Any, where: str) -> dict[str, Limits]:
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: "defaults" must be an object by role, got {_short(raw)}')
    out = dict(DEFAULT_LIMITS)
    for role, limits in raw.items():
        name = f'{where}: defaults[{role!r}]'
        if role not in ROLES:
            raise ValueError(f"{name}: unknown role {role!r}; the roles are {', '.join(ROLES)}")
        if not isinstance(limits, dict) or set(limits) - set(LIMIT_FIELDS):
            raise ValueError(f"{name}: expected an object with some of {', '.join(LIMIT_FIELDS)}, got {_short(limits)}")
        out[role] = _limits(limits, name, DEFAULT_LIMITS[role])
    return out


def _entry(raw: Any, name: str, defaults: dict[str, Limits]) -> Credential:
    if not isinstance(raw, dict):
        raise ValueError(f"{name}: expected an object, got {_short(raw)}")
    unknown = sorted(set(raw) - set(ENTRY_FIELDS))
    if unknown:
        raise ValueError(f"{name}: unknown field(s) {unknown}; an entry has {', '.join(ENTRY_FIELDS)}")
    key_id, role, agent = raw.get("id"), raw.get("role"), raw.get("agent")
    if not isinstance(key_id, str) or not ID.match(key_id):
        raise ValueError(f"{name}: id must be 1-64 characters from [A-Za-z0-9._@:-], got {_short(key_id)}")
    if role not in ROLES:
        raise ValueError(f"{name}: role must be one of {', '.join(ROLES)}, got {_short(role)}")
    if agent is not None and (not isinstance(agent, str) or not agent.strip()):
        raise ValueError(f"{name}: agent must be a non-empty string, got {_short(agent)}")
    if role == "agent" and agent is None:
        raise ValueError(f'{name}: an agent key needs "agent": the agent id it deposits as')
    if role == "reader" and agent is not None:
        raise ValueError(f"{name}: a reader key acts as no agent (it cannot deposit); drop \"agent\" or make it "
                         "an agent key")
    key, hexdigest = raw.get("key"), raw.get("key_sha256")
    if (key is None) == (hexdigest is None):
        raise ValueError(f'{name}: give the secret as exactly one of "key" or "key_sha256" (its SHA-256 hex digest)')
    if key is not None:
        if not isinstance(key, str) or len(key) < MIN_KEY_CHARS:
            raise ValueError(f"{name}: key must be a string of at least {MIN_KEY_CHARS} characters "
                             f"(python -m qis_lib.serve.auth new makes one)")
        digest = digest_of(key)
    else:
        if not isinstance(hexdigest, str) or not HEX64.match(hexdigest.lower()):
            raise ValueError(f"{name}: key_sha256 must be 64 hex digits (the SHA-256 of the key), "
                             f"got {_short(hexdigest)}")
        digest = bytes.fromhex(hexdigest)
    return Credential(key_id, role, agent, digest, _limits(raw, name, defaults[role]))


class AuthFile:
    """The credentials of `path`, read again when the file changes (checked at most once a
    second, on use) or when `reload()` is called (SIGHUP). A file that no longer parses keeps
    the credentials already loaded, and the log says why."""

    CHECK_EVERY_S = 1.0

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.credentials = Credentials.load(self.path)  # at start a broken file is an error
        self.last_error: str | None = None
        self._checked = time.monotonic()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> Credentials:
        now = time.monotonic()
        if now - self._checked >= self.CHECK_EVERY_S:
            self._checked = now
            if self._stat() != self._stamp:
                self.reload()
        return self.credentials

    def reload(self) -> bool:
        """Read the file again; True if the new keys are in use, False (old keys kept) if it is broken."""
        with self._lock:
            stamp = self._stat()
            try:
                fresh = Credentials.load(self.path)
            except ValueError as exc:
                self._stamp = stamp  # do not retry the same broken file every second
                self.last_error = str(exc)
                log.error("auth: keeping the %d keys already loaded: %s", len(self.credentials), exc)
                return False
            self._stamp, self.credentials, self.last_error = stamp, fresh, None
            log.info("auth: loaded %d keys from %s", len(fresh), self.path)
            return True


class KeyLimiter:
    """Per key id: requests in flight and a token bucket. `admit` says whether a request may
    start (None) or how many seconds to wait (the answer's Retry-After)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}  # id -> (tokens, when)
        self._inflight: dict[str, int] = {}

    def admit(self, cred: Credential) -> float | None:
        limits = cred.limits
        with self._lock:
            if limits.max_concurrent is not None and self._inflight.get(cred.id, 0) >= limits.max_concurrent:
                return 1.0
            if limits.rate_per_s is not None:
                now = self._clock()
                tokens, when = self._tokens.get(cred.id, (float(limits.burst), now))
                tokens = min(float(limits.burst), tokens + (now - when) * limits.rate_per_s)
                if tokens < 1.0:
                    self._tokens[cred.id] = (tokens, now)
                    return (1.0 - tokens) / limits.rate_per_s
                self._tokens[cred.id] = (tokens - 1.0, now)
            self._inflight[cred.id] = self._inflight.get(cred.id, 0) + 1
            return None

    def release(self, cred: Credential) -> None:
        with self._lock:
            left = self._inflight.get(cred.id, 0) - 1
            if left > 0:
                self._inflight[cred.id] = left
            else:
                self._inflight.pop(cred.id, None)


def write_keys_file(path: str | os.PathLike, agents: Sequence[str] | dict[str, dict | None] = (),
                    limits: dict | None = None) -> dict[str, str]:
    """A keys file at `path` for harnesses and tests: one admin key ("admin") and an agent key
    per agent id, fresh random secrets. `limits` (e.g. {"rate_per_s": None}: none) go on every
    agent key; `agents` as a dict gives each agent its own (None: the defaults). Returns the
    secrets by "admin" and by agent id."""
    own = dict(agents) if isinstance(agents, dict) else {a: limits for a in agents}
    secrets_by = {"admin": secrets.token_urlsafe(24), **{a: secrets.token_urlsafe(24) for a in own}}
    entries = [{"id": "admin", "role": "admin", "key": secrets_by["admin"]}]
    entries += [{"id": f"key-{i}", "role": "agent", "agent": a, "key": secrets_by[a], **(own[a] or {})}
                for i, a in enumerate(own)]
    Credentials.parse({"keys": entries}, str(path))
    Path(path).write_text(json.dumps({"keys": entries}))
    return secrets_by


def new_entry(key_id: str, role: str, agent: str | None = None) -> tuple[str, dict]:
    """A fresh random key and its file entry (digest only), checked like any entry."""
    key = secrets.token_urlsafe(32)
    entry = {"id": key_id, "role": role, **({"agent": agent} if agent else {}),
             "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
    Credentials.parse({"keys": [entry]}, "the new entry")
    return key, entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qis_lib.serve.auth",
                                     description="Make a key for the routing service's --auth file.")
    sub = parser.add_subparsers(dest="what", required=True)
    new = sub.add_parser("new", help="print a new secret (once) and its entry for the file (digest only)")
    new.add_argument("--id", required=True, help="a name for the key, shown in logs and the audit file")
    new.add_argument("--role", required=True, choices=ROLES)
    new.add_argument("--agent", default=None, help="for an agent key: the agent id it deposits as")
    digest = sub.add_parser("digest", help="print the key_sha256 of a key read from standard input")
    digest.set_defaults()
    args = parser.parse_args(argv)
    if args.what == "digest":
        print(hashlib.sha256(sys.stdin.readline().rstrip("\n").encode()).hexdigest())
        return 0
    try:
        key, entry = new_entry(args.id, args.role, args.agent)
    except ValueError as exc:
        parser.error(str(exc).replace("the new entry: keys[0]", "the new key"))
    print(f"secret (give it to the agent; it is not stored anywhere): {key}", file=sys.stderr)
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
