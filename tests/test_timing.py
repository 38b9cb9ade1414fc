import numpy as np
import pytest

from qis_lib.bench.timing import paired_difference, summarise, summary_table, time_calls, time_interleaved


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


# --- two calls compared query by query -------------------------------------------------------

def test_time_interleaved_runs_every_fn_on_each_input_in_its_turn():
    clock, calls = StepClock([]), []

    def fn(name, seconds):
        def call(x):
            calls.append((name, x))
            clock.now += seconds * (x + 1)
        return call

    orders = [("a", "b"), ("b", "a")]
    progress = []
    times = time_interleaved({"a": fn("a", 1.0), "b": fn("b", 10.0)}, [0, 1, 2], orders, clock=clock,
                             progress=progress.append, every=2)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]  # one input at a time
    np.testing.assert_allclose(times["a"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(times["b"], [10.0, 20.0, 30.0])
    assert progress == [2, 1]


def test_time_interleaved_default_orders_put_each_fn_first_in_turn():
    calls = []
    time_interleaved({name: (lambda x, name=name: calls.append(name)) for name in "abc"}, range(3))
    assert calls == list("abc" "bca" "cab")


@pytest.mark.parametrize("fns, inputs, orders, message", [
    ({}, [1], None, "fns must map names"),
    ({"a": 42}, [1], None, "fns must map names"),
    ({"a": print, "b": print}, [1], [("a",)], "each order must name every fn once"),
    ({"a": print, "b": print}, [1], [("a", "a")], "each order must name every fn once"),
    ({"a": print}, [1], [], "each order must name every fn once"),
    ({"a": print}, [], None, "empty"),
])
def test_time_interleaved_rejects_bad_arguments(fns, inputs, orders, message):
    with pytest.raises(ValueError, match=message):
        time_interleaved(fns, inputs, orders)


def test_paired_difference_is_the_median_of_each_inputs_difference():
    router = np.array([0.0011, 0.0022, 0.0050, 0.0013])
    raw = np.array([0.0010, 0.0020, 0.0010, 0.0010])
    # differences 100, 200, 4000, 300 us: median 250; ratios 0.1, 0.1, 4.0, 0.3: median 0.2
    stats = paired_difference(router, raw)
    assert stats["median_diff_us"] == pytest.approx(250.0)
    assert stats["median_ratio"] == pytest.approx(0.2)
    # not the difference of medians (1750 - 1000 = 750 us): a per-input comparison
    assert paired_difference(router, raw, unit="ms")["median_diff_ms"] == pytest.approx(0.25)


@pytest.mark.parametrize("a, b, unit, message", [
    ([0.1, 0.2], [0.1], "us", "one length"),
    ([], [], "us", "one length"),
    ([0.1], [0.0], "us", "must be > 0"),
    ([0.1], [0.1], "hours", "unit"),
])
def test_paired_difference_rejects_bad_arguments(a, b, unit, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b, unit)



def test_the_run_clock_reports_this_run_and_flags_a_loaded_start(monkeypatch):
    from qis_lib import runclock

    loads = iter([0.5, 1.25])
    monkeypatch.setattr(runclock, "load_1min", lambda: next(loads))
    quiet = runclock.RunClock()
    line = quiet.report()
    assert "0.50 when it started and 1.25 at its end" in line and "shared the cores" not in line
    loads = iter([3.0, 2.5])
    line = runclock.RunClock().report()
    assert "3.00 when it started and 2.50 at its end" in line and "shared the cores" in line


def test_the_clients_drop_an_idle_connection_before_the_service_does():
    """A pooled connection the service has just closed is a ReadError for the request written on it."""
    from qis_lib.serve.server import KEEP_ALIVE_S
    from qis_lib.stores.http import KEEPALIVE_EXPIRY_S, client_limits

    assert client_limits(4).keepalive_expiry == KEEPALIVE_EXPIRY_S < KEEP_ALIVE_S
