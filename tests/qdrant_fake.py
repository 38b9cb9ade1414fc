"""A recording stand-in for Qdrant nodes, checked against Qdrant's own OpenAPI document.

Every request a node receives is matched against the document kept in
tests/fixtures/qdrant/ (Qdrant v1.19.0, Apache 2.0; see the README there): its path and
method must be an operation of the document, its query parameters must be declared by that
operation and valid for their schemas, and its JSON body must validate against the
operation's request schema (openapi-schema-validator's OAS30Validator, references resolved
in the document). Every answer a node gives is validated against the operation's response
schema too, so the answers are shaped like a real node's. What does not match is recorded
in `problems`; tests assert there are none.

    with FakeCluster(nodes=3) as cluster:            # or RecordingQdrant() for one node
        store = QdrantStore(urls=cluster.urls, ...)
        cluster.nodes[0].fail("upsert_points", status=503)   # the next upsert answers 503
        cluster.kill("node1"); cluster.start("node1")
        assert cluster.problems() == []

The nodes keep points in memory and answer queries by exact cosine with the router's filter
conditions (range, match), which is enough for the store's conformance suite. A FakeCluster
is also a `ClusterLauncher`, so the cluster helpers and the failover harness run on it.
"""
from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from qis_lib.infra.launcher import ClusterLauncher
from qis_lib.infra.servers import free_port

OPENAPI_FILE = Path(__file__).parent / "fixtures" / "qdrant" / "openapi-v1.19.0.json.gz"
QDRANT_VERSION = "1.19.0"


# ------------------------------------------------------------------ the document


class OpenApi:
    """Qdrant's OpenAPI document: which operation a request is, and whether it is valid."""

    def __init__(self, path: Path = OPENAPI_FILE):
        from openapi_schema_validator import OAS30Validator

        with gzip.open(path, "rt", encoding="utf-8") as f:
            self.doc = json.load(f)
        self.version = self.doc["info"]["version"]
        self._validator_cls = OAS30Validator
        self._validators: dict[str, Any] = {}
        self.routes = []
        for template, item in self.doc["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
            for method, op in item.items():
                self.routes.append((pattern, template, method.upper(), op))
        # literal paths first: /collections/aliases is not /collections/{collection_name}
        self.routes.sort(key=lambda r: r[1].count("{"))

    def schema_errors(self, schema: dict, instance: Any) -> list[str]:
        instance = _shrink(instance)
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            # refs are "#/components/schemas/X": resolve them in the document the schema came from
            rooted = {**schema, "components": self.doc["components"]}
            self._validators[key] = self._validator_cls(rooted)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
                for e in self._validators[key].iter_errors(instance)]

    def match(self, method: str, path: str):
        """(operation, path parameters) or (None, {}) if the document has no such operation."""
        for pattern, template, m, op in self.routes:
            found = pattern.match(path)
            if found and m == method:
                return op, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, {}

    def check_request(self, method: str, path: str, query: list[tuple[str, str]], body: Any) -> tuple[dict | None, list[str]]:
        op, params = self.match(method, path)
        if op is None:
            return None, [f"{method} {path}: no such operation in Qdrant's OpenAPI document"]
        problems = []
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        for name, value in query:
            if name not in declared:
                problems.append(f"{op['operationId']}: query parameter {name!r} is not declared")
                continue
            candidates = [value]
            try:
                candidates.append(json.loads(value))
            except ValueError:
                pass
            if all(self.schema_errors(declared[name]["schema"], c) for c in candidates):
                problems.append(f"{op['operationId']}: query parameter {name}={value!r} does not fit its schema")
        given = {name for name, _ in query}
        problems += [f"{op['operationId']}: required query parameter {n!r} missing"
                     for n, p in declared.items() if p.get("required") and n not in given]
        content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
        if body is not None and content is None:
            problems.append(f"{op['operationId']}: sent a body, the operation takes none")
        elif content is not None:
            if body is None and (op.get("requestBody") or {}).get("required"):
                problems.append(f"{op['operationId']}: the request body is required")
            elif body is not None:
                problems += [f"{op['operationId']} body {e}" for e in self.schema_errors(content["schema"], body)]
        return op | {"path_params": params}, problems

    def check_response(self, op: dict, status: int, body: Any) -> list[str]:
        responses = op.get("responses", {})
        spec = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        if spec is None:
            return [f"{op['operationId']}: status {status} is not among its responses"]
        content = spec.get("content", {})
        if "application/json" in content:
            return [f"{op['operationId']} answer {e}" for e in self.schema_errors(content["application/json"]["schema"],
                                                                                 body)]
        return []


def _shrink(value: Any, keep: int = 4) -> Any:
    """`value` with every list of numbers cut to its first `keep`: a 384-d vector is checked
    as a list of numbers all the same, and validation of a batch takes milliseconds, not seconds."""
    if isinstance(value, dict):
        return {k: _shrink(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > keep and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return value[:keep]
        return [_shrink(v, keep) for v in value]
    return value


_OPENAPI: OpenApi | None = None


def openapi() -> OpenApi:
    """The document, loaded once per test session."""
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = OpenApi()
    return _OPENAPI


# ------------------------------------------------------------------ what the nodes hold


@dataclass
class Collection:
    config: dict
    points: dict[str, tuple[list[float], dict]] = field(default_factory=dict)
    payload_schema: dict[str, str] = field(default_factory=dict)

    @property
    def shard_number(self) -> int:
        return int(self.config.get("shard_number") or 1)

    @property
    def replication_factor(self) -> int:
        return int(self.config.get("replication_factor") or 1)


def _field_values(payload: dict, key: str) -> list:
    value = payload.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _condition(payload: dict, cond: dict) -> bool:
    if "must" in cond or "should" in cond or "must_not" in cond:
        return matches(payload, cond)
    if "has_id" in cond:
        return False
    values = _field_values(payload, cond["key"])
    if cond.get("range") is not None:
        r = cond["range"]
        ops = {"gt": lambda v, x: v > x, "gte": lambda v, x: v >= x, "lt": lambda v, x: v < x,
               "lte": lambda v, x: v <= x}
        return any(all(ops[k](v, x) for k, x in r.items() if x is not None) for v in values
                   if isinstance(v, (int, float)))
    match = cond.get("match") or {}
    if "value" in match:
        return match["value"] in values
    if "any" in match:
        return any(v in match["any"] for v in values)
    raise NotImplementedError(f"the fake node does not evaluate condition {cond}")


def matches(payload: dict, flt: dict | None) -> bool:
    """Qdrant's filter semantics for the conditions the router sends."""
    if not flt:
        return True
    return (all(_condition(payload, c) for c in flt.get("must") or [])
            and not any(_condition(payload, c) for c in flt.get("must_not") or [])
            and (not flt.get("should") or any(_condition(payload, c) for c in flt["should"])))


class State:
    """What a cluster holds: collections, peers, the leader; shared by its nodes (a stand-in
    for replication, which the real cluster does between peers)."""

    def __init__(self, peer_ids: list[int]):
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}
        self.peer_ids = peer_ids
        self.leader = peer_ids[0]
        self.operation_id = 0
        self.down: set[int] = set()
        self.catching_up: dict[int, int] = {}  # peer -> how many more state reads it stays Partial

    def replicas(self, coll: Collection) -> list[tuple[int, int, str]]:
        """(shard_id, peer_id, state) of every replica: shard s lives on peers s, s+1, ... (mod peers)."""
        rows = []
        for shard in range(coll.shard_number):
            for j in range(min(coll.replication_factor, len(self.peer_ids))):
                peer = self.peer_ids[(shard + j) % len(self.peer_ids)]
                state = "Dead" if peer in self.down else ("Partial" if self.catching_up.get(peer) else "Active")
                rows.append((shard, peer, state))
        return rows


# ------------------------------------------------------------------ one node


@dataclass
class Recorded:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    operation: str | None
    status: int
    problems: list[str]


@dataclass
class Fault:
    """What a node does instead of answering the next `times` requests of `operation`."""

    operation: str | None  # operationId, or None for any
    times: int
    status: int | None = None  # answer this status with a Qdrant error body
    raw: bytes | None = None  # answer 200 with these bytes as the body
    hang: float | None = None  # read the request, answer nothing for this many seconds
    apply: bool = True  # with hang: apply the request first (a write that lands, then times out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.server.node._connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.node._connections.discard(self.connection)

    def _handle(self):
        try:
            self.server.node.handle(self)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout) or the node was cut off
            self.close_connection = True
        except Exception as exc:  # a bug of the fake: recorded, answered 500
            self.server.node.crashes.append(exc)
            RecordingQdrant._send(self, 500, json.dumps({"status": {"error": repr(exc)}}).encode(), "application/json")

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    node: "RecordingQdrant"


class RecordingQdrant:
    """One fake Qdrant node on a loopback port (a thread), recording and checking every request."""

    def __init__(self, state: State | None = None, peer_id: int | None = None, port: int | None = None,
                 uri: str | None = None, cluster: bool = True):
        self.peer_id = peer_id or 1000 + (free_port() % 1000)
        self.state = state or State([self.peer_id])
        self.port = port or free_port()
        self.uri = uri or f"http://127.0.0.1:{self.port + 2}/"
        self.cluster_enabled = cluster
        self.peer_uris: dict[int, str] = {self.peer_id: self.uri}
        self.recorded: list[Recorded] = []
        self.crashes: list[BaseException] = []
        self.faults: list[Fault] = []
        self.ready = True
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    # lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "RecordingQdrant":
        openapi()  # load the document now, not while a client waits for its first answer
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), _Handler)
            self._server.node = self
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            daemon=True, name=f"fake-qdrant-{self.port}")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Like SIGKILL: the port refuses, open connections are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self) -> "RecordingQdrant":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # scripting
    def fail(self, operation: str | None = None, times: int = 1, **how) -> None:
        """The next `times` requests of `operation` (an operationId; None: any) fail as `how` says (see Fault)."""
        with self._lock:
            self.faults.append(Fault(operation, times, **how))

    def problems(self) -> list[str]:
        return [p for r in self.recorded for p in r.problems] + [f"the fake crashed: {e!r}" for e in self.crashes]

    def operations(self) -> list[str]:
        return [r.operation for r in self.recorded]

    def _take_fault(self, operation: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.operation in (None, operation) and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # the HTTP side
    def handle(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        problems: list[str] = []
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                problems.append(f"{h.command} {split.path}: the body is not JSON")
        query = parse_qsl(split.query, keep_blank_values=True)
        op, found = openapi().check_request(h.command, split.path, query, body)
        problems += found
        name = op["operationId"] if op else None
        record = Recorded(h.command, split.path, query, body, name, 0, problems)
        self.recorded.append(record)
        fault = self._take_fault(name)
        if fault is not None and fault.hang is not None:
            if fault.apply and op is not None:
                self._answer(op, body, dict(query))
            end = time.monotonic() + fault.hang
            while time.monotonic() < end and self.running:
                time.sleep(0.02)
            h.close_connection = True
            return
        if fault is not None and fault.raw is not None:
            record.status = 200
            return self._send(h, 200, fault.raw, "application/json")
        if fault is not None and fault.status is not None:
            status, payload = fault.status, {"status": {"error": f"fake node: scripted {fault.status}"}, "time": 0.0}
        elif op is None:
            status, payload = 404, {"status": {"error": f"no operation {h.command} {split.path}"}, "time": 0.0}
        else:
            try:
                status, payload = self._answer(op, body, dict(query))
            except KeyError as exc:
                status, payload = 404, {"status": {"error": f"Not found: {exc.args[0]}"}, "time": 0.0}
        record.status = status
        if op is not None and isinstance(payload, dict):
            record.problems += openapi().check_response(op, status, payload)
        if isinstance(payload, str):
            return self._send(h, status, payload.encode(), "text/plain")
        return self._send(h, status, json.dumps(payload).encode(), "application/json")

    @staticmethod
    def _send(h: _Handler, status: int, data: bytes, ctype: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # what a node answers, per operation
    def _answer(self, op: dict, body: Any, query: dict) -> tuple[int, Any]:
        name, params = op["operationId"], op["path_params"]
        with self.state.lock:
            result = getattr(self, f"op_{name}")(params, body or {}, query)
        if isinstance(result, tuple):
            return result
        return 200, {"result": result, "status": "ok", "time": 0.0001}

    def _collection(self, params) -> Collection:
        name = params["collection_name"]
        if name not in self.state.collections:
            raise KeyError(f"Collection `{name}` doesn't exist!")
        return self.state.collections[name]

    def _update(self) -> dict:
        self.state.operation_id += 1
        return {"operation_id": self.state.operation_id, "status": "completed"}

    def op_readyz(self, params, body, query):
        return (200, "all shards are ready") if self.ready else (503, "some shards are not ready")

    def op_healthz(self, params, body, query):
        return 200, "healthz check passed"

    op_livez = op_healthz

    def op_root(self, params, body, query):
        return {"title": "qdrant - vector search engine", "version": QDRANT_VERSION}

    def op_get_collections(self, params, body, query):
        return {"collections": [{"name": n} for n in sorted(self.state.collections)]}

    def op_collection_exists(self, params, body, query):
        return {"exists": params["collection_name"] in self.state.collections}

    def op_create_collection(self, params, body, query):
        name = params["collection_name"]
        if name in self.state.collections:
            return 400, {"status": {"error": f"Wrong input: Collection `{name}` already exists!"}, "time": 0.0}
        self.state.collections[name] = Collection(config=body)
        return True

    def op_delete_collection(self, params, body, query):
        return self.state.collections.pop(params["collection_name"], None) is not None

    def op_get_collection(self, params, body, query):
        coll = self._collection(params)
        vectors = coll.config["vectors"]
        return {
            "status": "green", "optimizer_status": "ok", "segments_count": 1,
            "points_count": len(coll.points), "indexed_vectors_count": 0,
            "config": {
                "params": {"vectors": vectors, "shard_number": coll.shard_number,
                           "replication_factor": coll.replication_factor,
                           "write_consistency_factor": int(coll.config.get("write_consistency_factor") or 1),
                           "on_disk_payload": True},
                "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                                "max_indexing_threads": 0, "on_disk": False},
                "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                                     "default_segment_number": 0, "max_segment_size": None,
                                     "memmap_threshold": None, "indexing_threshold": 10000,
                                     "flush_interval_sec": 5, "max_optimization_threads": None},
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            },
            "payload_schema": {k: {"data_type": v, "points": len(coll.points)} for k, v in coll.payload_schema.items()},
        }

    def op_create_field_index(self, params, body, query):
        coll = self._collection(params)
        schema = body.get("field_schema")
        coll.payload_schema[body["field_name"]] = schema if isinstance(schema, str) else schema.get("type")
        return self._update()

    def op_upsert_points(self, params, body, query):
        coll = self._collection(params)
        if "batch" in body:
            b = body["batch"]
            items = zip(b["ids"], b["vectors"], b.get("payloads") or [None] * len(b["ids"]))
        else:
            items = ((p["id"], p["vector"], p.get("payload")) for p in body["points"])
        size = coll.config["vectors"]["size"]
        for pid, vector, payload in items:
            if len(vector) != size:
                return 400, {"status": {"error": f"Wrong input: Vector dimension error: expected dim: {size}, "
                                                 f"got {len(vector)}"}, "time": 0.0}
            coll.points[str(uuid.UUID(str(pid))) if isinstance(pid, str) else pid] = (vector, payload or {})
        return self._update()

    def _ids(self, ids) -> list:
        return [str(uuid.UUID(i)) if isinstance(i, str) else i for i in ids]

    def op_get_points(self, params, body, query):
        coll = self._collection(params)
        return [{"id": pid, "payload": coll.points[pid][1] if body.get("with_payload", True) else None}
                for pid in self._ids(body["ids"]) if pid in coll.points]

    def op_delete_points(self, params, body, query):
        coll = self._collection(params)
        for pid in self._ids(body.get("points", [])):
            coll.points.pop(pid, None)
        return self._update()

    def op_count_points(self, params, body, query):
        coll = self._collection(params)
        return {"count": sum(matches(p, body.get("filter")) for _, p in coll.points.values())}

    def op_query_points(self, params, body, query):
        coll = self._collection(params)
        query_vector = body["query"]
        if isinstance(query_vector, dict):  # {"nearest": [...]} (a NearestQuery)
            query_vector = query_vector["nearest"]
        q = np.asarray(query_vector, dtype=np.float64)
        hits = []
        for pid, (vector, payload) in coll.points.items():
            if matches(payload, body.get("filter")):
                v = np.asarray(vector, dtype=np.float64)
                hits.append((float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q) or 1.0)), pid, payload))
        hits.sort(key=lambda h: -h[0])
        return {"points": [{"id": pid, "version": 0, "score": score,
                            "payload": payload if body.get("with_payload") else None}
                           for score, pid, payload in hits[:body.get("limit", 10)]]}

    def op_cluster_status(self, params, body, query):
        if not self.cluster_enabled:
            return {"status": "disabled"}
        return {"status": "enabled", "peer_id": self.peer_id,
                "peers": {str(p): {"uri": u} for p, u in self.peer_uris.items()},
                "raft_info": {"term": 1, "commit": 10 + self.state.operation_id, "pending_operations": 0,
                              "leader": self.state.leader, "role": "Leader" if self.state.leader == self.peer_id
                              else "Follower", "is_voter": True},
                "consensus_thread_status": {"consensus_thread_status": "working",
                                            "last_update": "2026-01-01T00:00:00Z"},
                "message_send_failures": {}}

    def op_collection_cluster_info(self, params, body, query):
        coll = self._collection(params)
        local, remote = [], []
        for shard, peer, state in self.state.replicas(coll):
            if peer == self.peer_id:
                local.append({"shard_id": shard, "points_count": len(coll.points), "state": state})
            else:
                remote.append({"shard_id": shard, "peer_id": peer, "state": state})
        for peer in list(self.state.catching_up):  # a restarted peer is Partial for a few reads
            self.state.catching_up[peer] -= 1
            if self.state.catching_up[peer] <= 0:
                del self.state.catching_up[peer]
        return {"peer_id": self.peer_id, "shard_count": coll.shard_number, "local_shards": local,
                "remote_shards": remote, "shard_transfers": []}


# ------------------------------------------------------------------ a cluster of them


class FakeCluster(ClusterLauncher):
    """Three (or `nodes`) RecordingQdrant nodes sharing one State: a ClusterLauncher whose kill
    cuts a node off (its port refuses) and whose start brings it back, its replicas Partial
    for a few reads before they are Active again."""

    def __init__(self, nodes: int = 3, catch_up_reads: int = 2, names: list[str] | None = None):
        names = names or [f"node{i + 1}" for i in range(nodes)]
        peer_ids = [101 + 100 * i for i in range(len(names))]
        self.state = State(peer_ids)
        self.nodes = list(names)
        self.entry = self.nodes[0]
        self.catch_up_reads = catch_up_reads
        self.servers = {n: RecordingQdrant(self.state, peer_id=p, uri=f"http://{n}:6335/")
                        for n, p in zip(self.nodes, peer_ids)}
        uris = {s.peer_id: s.uri for s in self.servers.values()}
        for server in self.servers.values():
            server.peer_uris = uris

    def url(self, node: str) -> str:
        return self.servers[self._check_node(node)].url

    def p2p_uri(self, node: str) -> str:
        return f"http://{self._check_node(node)}:6335"

    def up(self, timeout: float = 10.0) -> "FakeCluster":
        for node in self.nodes:
            self.start(node)
        self.wait_formed(timeout)
        return self

    def running(self, node: str) -> bool:
        return self.servers[self._check_node(node)].running

    def kill(self, node: str) -> None:
        server = self.servers[self._check_node(node)]
        server.stop()
        with self.state.lock:
            self.state.down.add(server.peer_id)

    stop = kill

    def start(self, node: str) -> None:
        server = self.servers[self._check_node(node)]
        with self.state.lock:
            if server.peer_id in self.state.down:
                self.state.down.discard(server.peer_id)
                self.state.catching_up[server.peer_id] = self.catch_up_reads
        server.start()

    def down(self) -> None:
        for node in self.nodes:
            self.servers[node].stop()

    def problems(self) -> list[str]:
        return [p for s in self.servers.values() for p in s.problems()]

    def recorded(self) -> list[Recorded]:
        return [r for s in self.servers.values() for r in s.recorded]


def silent_port() -> tuple[socket.socket, int]:
    """A listening socket that accepts connections and never answers (close it when done)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


__all__ = ["FakeCluster", "OpenApi", "RecordingQdrant", "State", "matches", "openapi", "silent_port"]
