import numpy as np
import pytest

from qis_lib.bench.timing import summarise, summary_table, time_calls


class StepClock:
    """A fake clock; each call to the timed function advances it by the next step."""

    def __init__(self, steps):
        self.now = 0.0
        self.steps = list(steps)

    def __call__(self):
        return self.now

    def work(self, *args):
        self.now += self.steps.pop(0)


def test_time_calls_measures_each_timed_call_and_skips_warmup():
    # Two warm-up calls take 100 s each and must not show up in the result.
    clock = StepClock([100.0, 100.0, 0.001, 0.002, 0.003])
    times = time_calls(clock.work, repeat=3, warmup=2, clock=clock)
    np.testing.assert_allclose(times, [0.001, 0.002, 0.003])
    assert clock.steps == []  # warm-up + timed calls, nothing more


def test_time_calls_passes_each_input_and_warms_up_on_the_first_ones():
    seen = []
    times = time_calls(seen.append, ["a", "b", "c"], warmup=2)
    assert seen == ["a", "b", "a", "b", "c"]
    assert times.shape == (3,) and (times >= 0).all()


def test_time_calls_warmup_cycles_over_short_inputs():
    seen = []
    time_calls(seen.append, ["a"], warmup=3)
    assert seen == ["a", "a", "a", "a"]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "either inputs"),
    ({"inputs": [1], "repeat": 2}, "either inputs"),
    ({"repeat": 0}, "repeat"),
    ({"inputs": []}, "empty"),
    ({"repeat": 2, "warmup": -1}, "warmup"),
])
def test_time_calls_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        time_calls(lambda *a: None, **kwargs)


def test_time_calls_rejects_non_callable():
    with pytest.raises(TypeError, match="callable"):
        time_calls(42, repeat=1)


def test_summarise_percentiles_in_milliseconds():
    # 1..101 ms: the median is 51 ms, p95 96 ms, p99 100 ms exactly.
    times = np.arange(1, 102) / 1000.0
    stats = summarise(times)
    assert stats["n"] == 101
    assert stats["mean_ms"] == pytest.approx(51.0)
    assert stats["p50_ms"] == pytest.approx(51.0)
    assert stats["p95_ms"] == pytest.approx(96.0)
    assert stats["p99_ms"] == pytest.approx(100.0)


def test_summarise_units_and_custom_percentiles():
    stats = summarise([0.002, 0.004], unit="us", percentiles=(0, 100))
    assert stats["p0_us"] == pytest.approx(2000.0)
    assert stats["p100_us"] == pytest.approx(4000.0)


@pytest.mark.parametrize("times", [[], [[0.1]], [float("nan")], [-0.1]])
def test_summarise_rejects_bad_times(times):
    with pytest.raises(ValueError):
        summarise(times)


def test_summarise_rejects_unknown_unit():
    with pytest.raises(ValueError, match="unit"):
        summarise([0.1], unit="minutes")


def test_summary_table_ratios_against_baseline():
    table = summary_table({"slow": [0.010] * 5, "fast": [0.002] * 5}, baseline="slow")
    assert list(table.index) == ["slow", "fast"]
    assert table.loc["fast", "p50_ms"] == pytest.approx(2.0)
    assert table.loc["fast", "speedup_p50"] == pytest.approx(5.0)
    assert table.loc["slow", "speedup_p99"] == pytest.approx(1.0)
    assert table["n"].tolist() == [5, 5]


def test_summary_table_unknown_baseline():
    with pytest.raises(ValueError, match="baseline"):
        summary_table({"a": [0.1]}, baseline="b")
