"""The routing service SIGKILLed under load (CI size: 2 kills, 2 writer processes), restarted
on the same qdrant-edge folder: nothing acknowledged lost, errors only during the outages,
the writers recover by themselves. The committed run (20 kills) is in results/http/."""
from qis_lib.experiments.http import crash


def test_sigkilled_service_loses_nothing_acknowledged(tmp_path):
    result = crash.run(kills=2, writers=2, embedder="hash", seed=1, folder=tmp_path, log=lambda _: None)
    loss = result["loss"]
    assert loss["acknowledged"] > 0 and loss["lost"] == 0 and loss["corrupted"] == 0 and loss["duplicated"] == 0, loss
    assert result["errors_outside_outages"] == 0, result["first_outside"]
    assert len(result["outages"]) == 2
    assert all("all_writers_acked_after_s" in o for o in result["outages"])  # every writer acknowledged again
    assert result["ok"]
