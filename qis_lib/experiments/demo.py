"""The series' demo, on real words: 20 agents arrive one after another, each deposits
its outcome and asks what agents with a similar problem found.

    python -m qis_lib.experiments.demo                      # qdrant-edge, the embedded Qdrant engine
    python -m qis_lib.experiments.demo --store memory   # any make_router name or url
"""
from __future__ import annotations

import argparse

import pandas as pd

from ..core.packet import OutcomePacket
from ..core.router import OutcomeRouter, make_router
from ..infra.seeds import load_seed_packets

def arrival_order(packets: list[OutcomePacket], n_agents: int = 20) -> list[OutcomePacket]:
    """Round-robin over domains, so neighbours in the queue have different problems."""
    by_domain: dict[str, list[OutcomePacket]] = {}
    for p in packets:
        by_domain.setdefault(p.domain_tags[0], []).append(p)
    order = []
    while len(order) < n_agents and any(by_domain.values()):
        for queue in by_domain.values():
            if queue and len(order) < n_agents:
                order.append(queue.pop(0))
    return order


def run_demo(router: OutcomeRouter, packets: list[OutcomePacket], top_k: int = 3) -> pd.DataFrame:
    """Each agent in turn synthesizes; one row per agent: what it found (best first, in the
    router's order: by cosine similarity on a dense store, by fused BM25 + dense rank on a hybrid
    one; each with its cosine) and whether the best one is from the agent's own domain."""
    rows = []
    for arrival, packet in enumerate(packets, 1):
        result = router.synthesize(packet.problem_description, packet, top_k=top_k)
        domain = packet.domain_tags[0]
        found = [(p.agent_id, round(s, 2)) for p, s in result.matches]
        rows.append({
            "arrival": arrival,
            "agent": packet.agent_id,
            "found": "  ".join(f"{rank}. {a} ({s:.2f})" for rank, (a, s) in enumerate(found, 1)) or "-",
            "same_domain_in_top_k": sum(p.domain_tags[0] == domain for p, _ in result.matches),
            "top1_same_domain": bool(result.matches) and result.matches[0][0].domain_tags[0] == domain,
            "consensus": result.consensus or "-",
        })
    return pd.DataFrame(rows)


def summary_line(table: pd.DataFrame) -> str:
    """What the demo showed, in words a newcomer reads: how many agents got, as their best match,
    the outcome of an agent who worked on the same kind of problem."""
    hits = table["top1_same_domain"]
    first = int(table.loc[hits, "arrival"].min()) if hits.any() else None
    domains = table["agent"].str.rsplit("-", n=1).str[0].nunique()
    text = (f"{int(hits.sum())} of {len(table)} agents got, as their best match, the outcome of an agent who had "
            f"met the same kind of problem (the same domain, of {domains}).")
    if first is not None:
        text += (f" The first was agent {first}: the agents before it each had no one with their kind of "
                 f"problem ahead of them, so the best anyone could offer came from another domain.")
    return text


def main(argv: list[str] | None = None) -> None:
    """The command line: run the demo on --store and print what each agent found."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", "--transport", dest="store", default="qdrant-edge",
                        help="make_router name or url (default: qdrant-edge)")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--embedder", default=None, help="embedder backend (default: the real MiniLM model)")
    parser.add_argument("--dense", action="store_true",
                        help="dense search only (default: hybrid BM25 + dense where the store can fuse them)")
    args = parser.parse_args(argv)
    packets = arrival_order(load_seed_packets(), args.agents)
    with make_router(args.store, embedder=args.embedder, **({"hybrid": False} if args.dense else {})) as router:
        order = ("ranked by fusing two rankings (BM25 keyword match and dense cosine similarity, reciprocal rank "
                 "fusion), so the cosines in brackets need not fall" if router.hybrid else
                 "ranked by cosine similarity (in brackets)")
        print(f"{len(packets)} agents on the {router.store.name} store, {'hybrid' if router.hybrid else 'dense'} "
              f"search, embedder {router.embedder.name}.\nEach agent in turn deposits its outcome and asks for the "
              f"{args.top_k} most similar outcomes of other agents: 'found' lists them best first, {order}.\n")
        table = run_demo(router, packets, top_k=args.top_k)
        with pd.option_context("display.max_colwidth", 90, "display.width", 180):
            print(table.to_string(index=False))
        print("\n" + summary_line(table))
        print(f"The store holds {router.stats()['packets']} packets, one per agent.")


if __name__ == "__main__":
    main()
