"""How qdrant-edge answers a filtered query, measured (`python -m qis_lib.bench.production planner`).

One bulk-loaded, indexed qdrant-edge store (hybrid, so dense and hybrid queries both run on
it) per planner config that needs a build of its own (`CONFIGS`: the full-scan threshold,
`is_tenant` on domain_tags); on each, ACORN off and on (a search parameter, no rebuild), and
per filter kind (`filter_kinds`) p50/p99 of `store.query` and recall@10 against exact
search with the same filter, each pass timed after an untimed pass over the same queries (a
first pass finds the pages of its answers cold, so whichever pass came first looked slower). The
kinds with no minimum confidence are also timed with the condition the stores used to send
then (`confidence >= 0`), to show what leaving it out saves.
A hybrid result is ranked by the fusion, so its recall against exact dense search is not its
quality, only how far it strays from the dense top 10.
"""
from __future__ import annotations

import contextlib
import time
from typing import Sequence
from unittest import mock

import numpy as np
import pandas as pd

from ..stores import QueryFilter
from ..stores.qdrant_edge import QdrantEdgeStore
from ..stores.qdrant_edge_params import EdgePlanner
from . import data
from .edge_tools import load_store, machine, time_queries, vector_set
from .latency import K

QDRANT_FULL_SCAN = 6_666  # Qdrant's default full_scan_threshold, 10,000 KB, in 384-d vectors
CONFIGS = {"qdrant": dict(full_scan_points=QDRANT_FULL_SCAN, tenant_domain=False),
           "tenant": dict(full_scan_points=QDRANT_FULL_SCAN, tenant_domain=True),
           "full scan 1000": dict(full_scan_points=1000, tenant_domain=False),
           "tenant, full scan 1000": dict(full_scan_points=1000, tenant_domain=True)}
ACORNS = (None, 0.4)


def filter_kinds(queries: int, seed: int) -> dict[str, list[QueryFilter]]:
    """The filters timed: no minimum confidence (the router's default) with and without a
    domain, the benchmark's domain filter, and a filter as selective without a domain."""
    domains = [f.domain for f in data.make_filters(queries, True, seed)]
    return {"expiry only": [QueryFilter(now=data.NOW)] * queries,
            "domain": [QueryFilter(now=data.NOW, domain=d) for d in domains],
            "domain, confidence >= 0.5": data.make_filters(queries, True, seed),
            "confidence >= 0.95": [QueryFilter(now=data.NOW, min_confidence=0.95)] * queries}


@contextlib.contextmanager
def confidence_always_sent():
    """qdrant-edge sends `confidence >= min_confidence` even at 0.0, as every store did before
    conditions that keep everything were left out (to measure what leaving it out saves)."""
    import qdrant_edge as qe

    from ..stores import qdrant_edge as module

    plain = module.edge_filter

    def sent(flt: QueryFilter):
        native = plain(flt)
        if flt.min_confidence > 0.0:
            return native
        kept = qe.FieldCondition("confidence", range=qe.RangeFloat(gte=flt.min_confidence))
        return qe.Filter(must=[*native.must, kept], must_not=native.must_not)

    with mock.patch.object(module, "edge_filter", sent):
        yield


def planner(n: int, vectors: str = "random", queries: int = 300, seed: int = 0, gitbugs_path=None,
            configs: Sequence[str] = tuple(CONFIGS), acorns: Sequence[float | None] = ACORNS,
            progress: bool = False) -> pd.DataFrame:
    """One row per (config, acorn, filter kind, dense or hybrid, confidence condition sent or not)."""
    vset = vector_set(vectors, n, queries, seed, gitbugs_path, progress)
    points = data.make_points(vset.texts, seed)
    kinds = filter_kinds(queries, seed)
    masks = {name: data.filter_masks(points, flts) for name, flts in kinds.items()}
    rows = []
    for config in configs:
        with QdrantEdgeStore(dim=vset.vectors.shape[1], hybrid=True, planner=EdgePlanner(**CONFIGS[config])) as store:
            load_s = load_store(store, vset, points, progress)
            start = time.perf_counter()
            store.after_bulk_load()
            index_s = time.perf_counter() - start
            for acorn in acorns:
                store.set_acorn(acorn)
                for name, flts in kinds.items():
                    sent_too = acorn is None and flts[0].min_confidence == 0.0
                    for mode, texts in (("dense", None), ("hybrid", vset.query_texts)):
                        for sent in (False, True) if sent_too else (False,):
                            with confidence_always_sent() if sent else contextlib.nullcontext():
                                # an untimed pass over the same queries first: a pass finds the pages
                                # of its answers (vectors, payloads) warm, whatever ran before it
                                seconds, found = time_queries(store, vset, flts, range(queries), texts=texts,
                                                              warmup=queries)
                            recall = data.recall_at_k(found, vset.vectors, vset.queries, masks[name], K)
                            rows.append({
                                "store": "qdrant-edge", "vectors": vectors, "n": n, "config": config,
                                **CONFIGS[config], "acorn": acorn, "filter": name, "mode": mode,
                                "confidence_sent": sent or flts[0].min_confidence > 0.0,
                                "pass_share": float(np.mean([m.mean() for m in masks[name]])),
                                "p50_ms": np.percentile(seconds, 50) * 1e3, "p99_ms": np.percentile(seconds, 99) * 1e3,
                                "recall_at_10": recall.mean(), "recall_min": recall.min(), "load_s": load_s,
                                "index_s": index_s, "segments": store.info()["segments"], "queries": queries,
                                **store.options.as_dict(), **machine()})
    return pd.DataFrame(rows)
