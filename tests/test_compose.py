"""docker-compose.yml describes a Qdrant cluster that forms: checked by parsing it (no docker needed).

If one of these fails, compare the file with Qdrant's distributed deployment docs: cluster
mode on every node, node 1 with --uri, the others with --bootstrap node 1 and their own --uri.
"""
import re
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
NODES = ["qdrant_node1", "qdrant_node2", "qdrant_node3"]


@pytest.fixture(scope="module")
def spec():
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def env_of(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command_of(service):
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def flag(command, name):
    return command[command.index(name) + 1] if name in command else None


def test_three_qdrant_services(spec):
    qdrant = [name for name, service in spec["services"].items() if "qdrant/qdrant" in service.get("image", "")]
    assert sorted(qdrant) == NODES


def test_image_is_pinned_and_the_same_on_every_node(spec):
    images = {spec["services"][n]["image"] for n in NODES}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", image), f"not a pinned release tag: {image}"


def test_cluster_mode_on_every_node(spec):
    for node in NODES:
        env = env_of(spec["services"][node])
        assert env.get("QDRANT__CLUSTER__ENABLED") == "true", node
        assert env.get("QDRANT__CLUSTER__P2P__PORT", "6335") == "6335", node


def test_first_node_announces_itself_and_does_not_bootstrap(spec):
    command = command_of(spec["services"]["qdrant_node1"])
    assert flag(command, "--uri") == "http://qdrant_node1:6335"
    assert "--bootstrap" not in command


@pytest.mark.parametrize("node", NODES[1:])
def test_other_nodes_bootstrap_from_node1_with_their_own_uri(spec, node):
    command = command_of(spec["services"][node])
    assert flag(command, "--bootstrap") == "http://qdrant_node1:6335"
    assert flag(command, "--uri") == f"http://{node}:6335"


def test_host_ports_are_distinct_and_map_to_http_and_grpc(spec):
    seen = []
    for node in NODES:
        mappings = [str(m) for m in spec["services"][node]["ports"]]
        targets = sorted(m.rsplit(":", 1)[1] for m in mappings)
        assert targets == ["6333", "6334"], (node, mappings)
        seen += [m.rsplit(":", 1)[0] for m in mappings]
    assert len(seen) == len(set(seen)) == 6


def test_each_node_has_its_own_named_volume_for_storage(spec):
    volumes = []
    for node in NODES:
        mounts = [str(v) for v in spec["services"][node]["volumes"]]
        storage = [m.split(":")[0] for m in mounts if m.split(":")[1] == "/qdrant/storage"]
        assert len(storage) == 1, (node, mounts)
        volumes.append(storage[0])
    assert len(set(volumes)) == 3
    assert set(volumes) <= set(spec.get("volumes") or {}), "storage volumes must be declared (named volumes)"


def test_every_node_has_a_readiness_healthcheck(spec):
    for node in NODES:
        check = spec["services"][node].get("healthcheck")
        assert check, node
        test = check["test"]
        text = " ".join(test) if isinstance(test, list) else test
        assert "/readyz" in text, node
        # the official image has no curl or wget
        assert "curl" not in text and "wget" not in text, node
