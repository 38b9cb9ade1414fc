"""python -m qis_lib.experiments.http {load,capacity,crash,flood} --help"""
import argparse
import shlex
import sys
import tempfile

from . import bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qis_lib.experiments.http")
    sub = parser.add_subparsers(dest="what", required=True)
    load = sub.add_parser("load", help="throughput and latency against the number of agents, exact counts")
    load.add_argument("--agents", default="1,4,16,64,1000", help="comma-separated numbers of agents")
    load.add_argument("--store", default="memory://")
    load.add_argument("--embedder", default=None, help="embedder backend (default: the fastest installed)")
    load.add_argument("--max-processes", type=int, default=16)
    load.add_argument("--clients", choices=bench.CLIENTS, default="processes",
                      help="processes: agent processes (up to --max-processes), agents as threads in them; "
                           "async: every agent an asyncio task in this one process, on the async client")
    load.add_argument("--service-args", default="",
                      help='options for each service, e.g. "--batch-max 32 --batch-wait-ms 1"')
    load.add_argument("--out", default="results/http")
    crash = sub.add_parser("crash", help="SIGKILL the service under load, restart it, check nothing acknowledged is lost")
    crash.add_argument("--kills", type=int, default=20)
    crash.add_argument("--writers", type=int, default=4, help="agent processes depositing and querying")
    crash.add_argument("--embedder", default="hash", help="the service's embedder (default hash: this is about the store)")
    crash.add_argument("--seed", type=int, default=0)
    crash.add_argument("--out", default="results/http")
    flood = sub.add_parser("flood", help="one key flooding, another agent's query latency: what the per-key limits buy")
    flood.add_argument("--queries", type=int, default=200, help="the victim's questions per phase")
    flood.add_argument("--packets", type=int, default=1000, help="packets in the store")
    flood.add_argument("--flood-threads", type=int, default=32)
    flood.add_argument("--half-open", type=int, default=1500, help="connections that send half a request")
    flood.add_argument("--max-connections", type=int, default=1000, help="the service's bound of open connections")
    flood.add_argument("--embedder", default=None, help="the service's embedder (default: the fastest installed)")
    flood.add_argument("--out", default="results/http")
    capacity = sub.add_parser("capacity", help="what one service sustains, wrk as the agents (needs apt-get install wrk)")
    capacity.add_argument("--connections", default="1,16,64,1000", help="comma-separated numbers of connections")
    capacity.add_argument("--seconds", type=float, default=20.0, help="seconds of load per level")
    capacity.add_argument("--packets", type=int, default=1000)
    capacity.add_argument("--store", default="memory://")
    capacity.add_argument("--embedder", default=None, help="the service's embedder (default: the fastest installed)")
    capacity.add_argument("--service-args", default="", help='options for the service, e.g. "--batch-max 32"')
    capacity.add_argument("--out", default="results/http")
    args = parser.parse_args(argv)
    for name in ("queries", "packets", "flood_threads", "half_open", "kills", "writers", "max_connections", "seconds"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    command = "python -m qis_lib.experiments.http " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    folder = tempfile.mkdtemp(prefix="qis-http-")
    if args.what == "load":
        levels = [int(x) for x in args.agents.split(",")]
        result = bench.measure(levels, store=args.store, embedder=args.embedder, max_processes=args.max_processes,
                               folder=folder, clients=args.clients, service_args=shlex.split(args.service_args))
        bench.save(result, args.out, command)
        print(bench.summary(result).to_string(index=False))
        ok = all(c["ok"] for c in result["checks"])
    elif args.what == "capacity":
        from . import capacity as capacity_run

        result = capacity_run.run([int(x) for x in args.connections.split(",")], seconds=args.seconds,
                                  packets=args.packets, store=args.store, embedder=args.embedder,
                                  service_args=shlex.split(args.service_args))
        capacity_run.save(result, args.out, command)
        print(capacity_run.describe(result))
        ok = all(r["non_2xx"] == 0 and r["socket_errors"] == 0 for r in result["rows"])
    elif args.what == "flood":
        from . import flood as flood_run

        result = flood_run.run(queries=args.queries, packets=args.packets, flood_threads=args.flood_threads,
                               half_open_n=args.half_open, max_connections=args.max_connections,
                               embedder=args.embedder, folder=folder)
        flood_run.save(result, args.out, command)
        print(flood_run.describe(result))
        ok = True
    else:
        from . import crash as crash_run

        result = crash_run.run(kills=args.kills, writers=args.writers, embedder=args.embedder, seed=args.seed,
                               folder=folder)
        crash_run.save(result, args.out, command)
        print(crash_run.describe(result))
        ok = result["ok"]
    print(f"every check passed: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
