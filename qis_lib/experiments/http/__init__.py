"""The routing service under load and under SIGKILL.

- `load`: agent processes (and many agents per process) depositing and querying through
  `RemoteRouter`, the exact-count check of what they did;
- `bench`: throughput and latency against the number of agents, beside the same work
  in-process and the embedder alone;
- `crash`: the service SIGKILLed under load and restarted on the same store, with the
  ledger check after every restart.

    python -m qis_lib.experiments.http load --agents 1,4,16,64,1000 --out results/http/
    python -m qis_lib.experiments.http crash --kills 20 --out results/http/
"""
