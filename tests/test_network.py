"""The network (sim/network.py) against queueing theory, hand-worked max-min cases and traces.

Links are driven directly: Poisson arrivals, sizes in bytes, one SimPy process per transfer.
Theory checks follow tests/test_queueing_theory.py: the batch-means 95% CI must be under 5% of
the mean, and the closed form must lie inside it.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from edgevlm.sim.bandwidth import PACKET_BITS, mahimahi_lines, parse_mahimahi, write_mahimahi
from edgevlm.sim.network import FifoLink, LinkConfig, PsLink, build_link
from edgevlm.sim.summary import batch_means_ci

MEAN_SERVICE_S = 0.1
CAPACITY_MBPS = 8.0
MEAN_BYTES = CAPACITY_MBPS * 1e6 * MEAN_SERVICE_S / 8  # 100 kB at 8 Mbit/s takes 0.1 s



def carry(link, *args):
    """A process carrying one message (a link's `transfer` is waited on with `yield from`)."""
    yield from link.transfer(*args)

def drive(link_cfg: LinkConfig, arrivals_s, sizes_bytes, access=None, base_dir=None):
    """Run transfers through one link; returns (finish times, the link), in input order."""
    env = simpy.Environment()
    link = build_link(env, link_cfg, base_dir)
    n = len(sizes_bytes)
    done = [np.nan] * n
    access = access if access is not None else [None] * n
    arrivals_s = list(arrivals_s)

    def record(i):
        return lambda _ev: done.__setitem__(i, env.now)

    def source():
        for i, t in enumerate(arrivals_s):
            if t > env.now:
                yield env.timeout(t - env.now)
            env.process(carry(link, sizes_bytes[i], access[i])).callbacks.append(record(i))

    env.process(source())
    env.run()
    link.stats(env.now)
    return np.asarray(done), link


def poisson(rho: float, n: int, seed: int, deterministic: bool):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(MEAN_SERVICE_S / rho, n))
    sizes = np.full(n, MEAN_BYTES) if deterministic else rng.exponential(MEAN_BYTES, n)
    return arrivals, sizes


def assert_theory_in_ci(x: np.ndarray, theory: float) -> None:
    ci = batch_means_ci(x)
    lo, hi = ci["ci95"]
    assert ci["half_width"] < 0.05 * ci["value"], f"CI too wide to judge: {ci}"
    assert lo <= theory <= hi, f"theory {theory:.4f} outside 95% CI [{lo:.4f}, {hi:.4f}]"


def link(discipline="ps", **kw) -> LinkConfig:
    kw.setdefault("capacity_mbps", CAPACITY_MBPS) if "bandwidth_trace" not in kw else None
    return LinkConfig(discipline=discipline, overhead_bytes=0, **kw)


# ---------------------------------------------------------------- theory


@pytest.mark.slow
@pytest.mark.parametrize("rho,n,deterministic", [(0.5, 40_000, False), (0.5, 30_000, True),
                                                 (0.8, 300_000, False), (0.8, 120_000, True)],
                         ids=["rho0.5-exp", "rho0.5-det", "rho0.8-exp", "rho0.8-det"])
def test_mm1_ps_mean_sojourn_is_insensitive(rho, n, deterministic):
    """M/G/1-PS: E[T] = E[S]/(1-rho) whatever the size distribution; slowdown mean 1/(1-rho)."""
    arrivals, sizes = poisson(rho, n, seed=21 + int(10 * rho), deterministic=deterministic)
    done, ps = drive(link("ps"), arrivals, sizes)
    sojourn = (done - arrivals)[n // 20:]
    assert_theory_in_ci(sojourn, MEAN_SERVICE_S / (1 - rho))
    st = ps.stats(float(done.max()))
    assert st["utilisation"] == pytest.approx(rho, rel=0.05)
    # M/G/1-PS: E[T | x] = x/(C(1-rho)), so every size's mean slowdown is 1/(1-rho); L = rho/(1-rho).
    assert st["slowdown"]["mean"] == pytest.approx(1 / (1 - rho), rel=0.07)
    assert st["mean_active_transfers"] == pytest.approx(rho / (1 - rho), rel=0.07)


@pytest.mark.parametrize("rho,n", [(0.5, 40_000), (0.8, 200_000)])
def test_mm1_fifo_on_the_link(rho, n):
    """M/M/1 FIFO: W = 1/(mu - lambda)."""
    arrivals, sizes = poisson(rho, n, seed=5, deterministic=False)
    done, _ = drive(link("fifo"), arrivals, sizes)
    mu = 1 / MEAN_SERVICE_S
    assert_theory_in_ci((done - arrivals)[n // 20:], 1 / (mu - rho * mu))


# ---------------------------------------------------------------- max-min with caps, by hand


def mbit(x: float) -> float:
    return x * 1e6 / 8  # bytes


def test_maxmin_capped_client_gets_its_cap_and_others_share_the_rest():
    """C = 10: caps 2, 5, none -> fair level 10/3 > 2, so 2; then 8 over two -> 4 each (5 > 4).
    A: 2 Mbit at 2 -> t=1. B: 4 Mbit at 4 -> t=1. C: 4 Mbit done at t=1, 4 left alone at 10 -> 1.4."""
    done, _ = drive(link("ps", capacity_mbps=10), [0, 0, 0], [mbit(2), mbit(4), mbit(8)],
                    access=[2e6, 5e6, None])
    np.testing.assert_allclose(done, [1.0, 1.0, 1.4], atol=1e-9)


def test_maxmin_cap_binds_again_after_a_departure():
    """C = 10, both capped at 6: 5 each. X (6 Mbit) ends at 1.2; Y then runs alone at its cap 6,
    not 10: 12 - 6 = 6 Mbit left -> 1 s more -> 2.2. Propagation 50 ms is added to both."""
    done, _ = drive(link("ps", capacity_mbps=10, propagation_ms=50), [0, 0], [mbit(6), mbit(12)],
                    access=[6e6, 6e6])
    np.testing.assert_allclose(done, [1.25, 2.25], atol=1e-9)


def test_maxmin_caps_below_capacity_leave_it_idle():
    """Caps 2 and 3 sum below C = 10: each gets its cap (2 and 3 Mbit both end at t=1)."""
    done, ps = drive(link("ps", capacity_mbps=10), [0, 0], [mbit(2), mbit(3)], access=[2e6, 3e6])
    np.testing.assert_allclose(done, [1.0, 1.0], atol=1e-9)
    assert ps.stats(1.0)["utilisation"] == pytest.approx(0.5)


def test_maxmin_with_a_late_arrival():
    """C = 12. t=0: U (uncapped, 12 Mbit) alone at 12. t=0.5: K (cap 2, 2 Mbit) arrives; fair
    6 > 2, so K gets 2 and U 10. U had 6 Mbit left -> 0.6 s -> 1.1. K ends at 1.5."""
    done, _ = drive(link("ps", capacity_mbps=12), [0, 0.5], [mbit(12), mbit(2)], access=[None, 2e6])
    np.testing.assert_allclose(done, [1.1, 1.5], atol=1e-9)


def test_fifo_uses_min_of_capacity_and_access_rate():
    done, _ = drive(link("fifo", capacity_mbps=10), [0, 0], [mbit(2), mbit(10)], access=[2e6, None])
    np.testing.assert_allclose(done, [1.0, 2.0], atol=1e-9)


# ---------------------------------------------------------------- traces


def test_mahimahi_hand_case(tmp_path):
    """Opportunities at 5 ms (two packets) and 10 ms, looping every 10 ms."""
    path = write_mahimahi(tmp_path / "t.up", [5, 5, 10])
    prof = parse_mahimahi(path)
    assert prof.cum_bits(0.0049) == 0 and prof.cum_bits(0.005) == 2 * PACKET_BITS
    assert prof.cum_bits(0.010) == 3 * PACKET_BITS and prof.cum_bits(0.015) == 5 * PACKET_BITS
    for discipline in ("ps", "fifo"):
        cfg = link(discipline, bandwidth_trace={"kind": "mahimahi", "path": str(path)})
        done, _ = drive(cfg, [0.0], [4500])
        assert done[0] == pytest.approx(0.010)
        done, _ = drive(cfg, [0.0], [6000])
        assert done[0] == pytest.approx(0.015)


def test_csv_trace_hand_case(tmp_path):
    """8 Mbit/s for 1 s, then 0 for 1 s, looping: 12 Mbit from t=0 ends at 2.5 s."""
    path = tmp_path / "bw.csv"
    path.write_text("t_s,mbps\n0,8\n1,0\n")
    for discipline in ("ps", "fifo"):
        done, _ = drive(link(discipline, bandwidth_trace={"kind": "csv", "path": str(path)}), [0.0], [mbit(12)])
        assert done[0] == pytest.approx(2.5)


@pytest.mark.parametrize("discipline", ["ps", "fifo"])
def test_constant_rate_mahimahi_matches_the_constant_link_within_one_packet(tmp_path, discipline):
    """One packet every ms is 12 Mbit/s. FIFO completion times agree within one packet time (1 ms).
    Under PS the unfinished work, which no work-conserving discipline changes, differs by at most
    one packet, so every busy period ends within 1 ms, and a transfer alone throughout agrees within
    1 ms. Inside a shared busy period a transfer may be one packet of service ahead or behind, which
    takes m packet times while m transfers share; we check those only in distribution."""
    path = write_mahimahi(tmp_path / "c.up", list(range(1, 1001)))
    rng = np.random.default_rng(3)
    n = 3000
    arrivals = np.cumsum(rng.exponential(0.05, n))
    sizes = rng.exponential(50_000, n)  # rho = 50 kB / 0.05 s = 8 Mbit/s over 12: 0.67
    trace_done, _ = drive(link(discipline, bandwidth_trace={"kind": "mahimahi", "path": str(path)}), arrivals, sizes)
    const_done, _ = drive(link(discipline, capacity_mbps=12), arrivals, sizes)
    diff = np.abs(trace_done - const_done)
    packet_s = 1e-3 + 1e-9
    if discipline == "fifo":
        assert diff.max() <= packet_s
    else:
        periods, start, end = [], 0, const_done[0]
        for i in range(1, n + 1):
            if i == n or arrivals[i] > end:
                periods.append((start, i))
                if i < n:
                    start, end = i, const_done[i]
            else:
                end = max(end, const_done[i])
        assert len(periods) > 300
        for a, b in periods:
            assert abs(trace_done[a:b].max() - const_done[a:b].max()) <= packet_s
        alone = np.array([b - a == 1 for a, b in periods])
        singles = np.array([a for a, b in periods])[alone]
        assert diff[singles].max() <= packet_s
        assert np.percentile(diff, 99) < 3e-3
    assert np.median(diff) < 0.5e-3


def bursty_trace(tmp_path, seed=0, seconds=20):
    rng = np.random.default_rng(seed)
    rates = np.clip(rng.lognormal(np.log(4.0), 0.8, seconds), 0.0, 30.0)
    rates[rng.random(seconds) < 0.15] = 0.0  # outages
    rates[0] = max(rates[0], 1.0)
    return write_mahimahi(tmp_path / "bursty.up", mahimahi_lines(rates.tolist()))


@pytest.mark.parametrize("discipline", ["ps", "fifo"])
def test_trace_link_never_delivers_more_than_the_trace_allows(tmp_path, discipline):
    """For every window (s, t]: the bytes of transfers that arrived at or after s and finished by t
    fit into the delivery opportunities of (s, t]."""
    path = bursty_trace(tmp_path)
    prof = parse_mahimahi(path)
    rng = np.random.default_rng(9)
    n = 600
    arrivals = np.sort(rng.uniform(0, 60, n))
    sizes = rng.exponential(3000.0, n) + 200
    done, _ = drive(link(discipline, bandwidth_trace={"kind": "mahimahi", "path": str(path)}), arrivals, sizes)
    assert np.isfinite(done).all()
    by_done = np.argsort(done)
    allow_cache = {}
    for i in range(0, n, 3):  # window starts: arrival instants
        s = arrivals[i]
        cs = allow_cache.setdefault(s, prof.cum_bits(s))
        inside = by_done[arrivals[by_done] >= s]
        carried_bits = np.cumsum(sizes[inside]) * 8
        allowed = np.array([prof.cum_bits(t) for t in done[inside]]) - cs
        assert (carried_bits <= allowed + 1e-6).all()


def test_access_trace_caps_each_client(tmp_path):
    """A client whose access trace gives 2 Mbit/s gets 2 Mbit/s on a fat PS link."""
    path = tmp_path / "acc.csv"
    path.write_text("0,2\n")
    from edgevlm.sim.bandwidth import parse_csv

    prof = parse_csv(path)
    done, _ = drive(link("ps", capacity_mbps=100), [0, 0], [mbit(2), mbit(50)], access=[prof, None])
    np.testing.assert_allclose(done, [1.0, 50 / 98], atol=1e-6)  # the other gets 100 - 2


# ---------------------------------------------------------------- parsing errors


@pytest.mark.parametrize("text,line,needle", [
    ("1\n2\nabc\n", 3, "integer"),
    ("1\n-4\n", 2, "negative"),
    ("5\n7\n6\n", 3, "must not decrease"),
    ("1\n2.5\n", 2, "integer"),
])
def test_mahimahi_parse_errors_name_file_and_line(tmp_path, text, line, needle):
    from edgevlm.sim.bandwidth import BandwidthTraceError

    path = tmp_path / "bad.up"
    path.write_text(text)
    with pytest.raises(BandwidthTraceError, match=needle) as err:
        parse_mahimahi(path)
    assert f"{path}:{line}:" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text,where,needle", [
    ("", "", "empty"),
    ("\n\n", "", "empty"),
    ("0\n", "", "loop period"),
])
def test_mahimahi_rejects_empty_and_zero_period(tmp_path, text, where, needle):
    from edgevlm.sim.bandwidth import BandwidthTraceError

    path = tmp_path / "bad.up"
    path.write_text(text)
    with pytest.raises(BandwidthTraceError, match=needle):
        parse_mahimahi(path)


@pytest.mark.parametrize("text,line,needle", [
    ("t_s,mbps\n0,1\n1\n", 3, "2 fields"),
    ("0,1\n1,x\n", 2, "not numbers"),
    ("0,1\n1,-2\n", 2, "negative"),
    ("0,1\n2,1\n1,1\n", 3, "must increase"),
    ("1,5\n", 1, "t_s = 0"),
])
def test_csv_parse_errors_name_file_and_line(tmp_path, text, line, needle):
    from edgevlm.sim.bandwidth import BandwidthTraceError, parse_csv

    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(BandwidthTraceError, match=needle) as err:
        parse_csv(path)
    assert f"{path}:{line}:" in str(err.value)


def test_csv_all_zero_and_empty_are_rejected(tmp_path):
    from edgevlm.sim.bandwidth import BandwidthTraceError, parse_csv

    (tmp_path / "z.csv").write_text("0,0\n5,0\n")
    with pytest.raises(BandwidthTraceError, match="zero"):
        parse_csv(tmp_path / "z.csv")
    (tmp_path / "e.csv").write_text("t_s,mbps\n")
    with pytest.raises(BandwidthTraceError, match="empty"):
        parse_csv(tmp_path / "e.csv")


def test_missing_trace_file_is_a_clear_error(tmp_path):
    from edgevlm.sim.bandwidth import BandwidthTraceError

    with pytest.raises(BandwidthTraceError, match="not found"):
        parse_mahimahi(tmp_path / "nope.up")


# ---------------------------------------------------------------- stats and structure


def test_build_link_picks_the_discipline():
    env = simpy.Environment()
    assert isinstance(build_link(env, LinkConfig(capacity_mbps=1)), PsLink)  # ps is the default
    assert isinstance(build_link(env, LinkConfig(capacity_mbps=1, discipline="fifo")), FifoLink)


def test_link_config_needs_exactly_one_capacity():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one"):
        LinkConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        LinkConfig(capacity_mbps=5, bandwidth_trace={"kind": "constant", "mbps": 5})


def test_many_concurrent_uncapped_transfers_cost_few_events():
    """10,000 transfers at once on PS: every one ends at n*size/C, with O(1) link events each."""
    n = 10_000
    done, ps = drive(link("ps", capacity_mbps=80), [0.0] * n, [1000.0] * n)
    np.testing.assert_allclose(done, n * 8000 / 80e6, rtol=1e-9)
    assert ps.events <= 3 * n


def test_capped_transfers_that_fit_run_independently_until_one_does_not():
    """8 Mbit/s link; 1 MB transfers capped at 2 Mbit/s arrive at 0, 0.5 and 1 s: they fit (6 of 8
    Mbit/s), each runs at its cap (4 s) and costs one SimPy event. An uncapped 1 MB transfer at
    1.5 s does not fit: the three keep 2 Mbit/s, it gets the 2 Mbit/s left until they finish."""
    env = simpy.Environment()
    ln = build_link(env, link("ps"))
    done, seen = {}, []

    def one(k, t, cap):
        yield env.timeout(t)
        yield from ln.transfer(1e6, cap)
        done[k] = env.now

    def probe():
        for t in (1.25, 3.0):
            yield env.timeout(t - env.now)
            seen.append((ln.active(), ln.backlog_bytes()))

    for k, t in enumerate((0.0, 0.5, 1.0)):
        env.process(one(k, t, 2e6))
    env.process(one(3, 1.5, None))
    env.process(probe())
    env.run(until=1.4)
    # three independent transfers, nobody joined yet: three scheduled wake-ups, no timer
    assert ln.n == 0 and len(ln._ind) == 3 and ln.events == 3
    env.run()
    assert [done[k] for k in range(3)] == pytest.approx([4.0, 4.5, 5.0], abs=1e-9)
    # the uncapped one: 2 Mbit/s from 1.5 to 4 (5 Mbit), 4 Mbit/s to 4.5 (2 Mbit), 6 to 5, then 8
    # 8 Mbit total: 5 + 2 = 7 by 4.5, the last 1 Mbit at 6 Mbit/s takes 1/6 s
    assert done[3] == pytest.approx(4.5 + 1 / 6, abs=1e-9)
    # at 1.25 s: three in flight, owing 1e6 - 2e6/8 * (1.25, 0.75, 0.25) bytes
    assert seen[0][0] == 3
    assert seen[0][1] == pytest.approx(3e6 - 0.25e6 * (1.25 + 0.75 + 0.25), rel=1e-9)
    assert seen[1][0] == 4
    st = ln.stats(env.now)
    assert st["transfers"] == 4 and st["bytes_carried"] == 4e6
    assert st["busy_fraction"] == pytest.approx(1.0)


# ---------------------------------------------------------------- property: conservation


@pytest.fixture(scope="module")
def trace_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bw")
    bursty = bursty_trace(d, seed=4, seconds=10)
    csv = d / "steps.csv"
    csv.write_text("t_s,mbps\n0,6\n0.25,0\n0.5,15\n1.5,3\n")
    return {"mahimahi": str(bursty), "csv": str(csv)}


def _tandem(first: LinkConfig, second: LinkConfig, arrivals, sizes, access):
    """Each transfer crosses `first` then `second` (e.g. a PS uplink, then a FIFO hop)."""
    env = simpy.Environment()
    a, b = build_link(env, first), build_link(env, second)
    mid, end = [np.nan] * len(sizes), [np.nan] * len(sizes)

    def one(i):
        yield env.timeout(arrivals[i])
        yield from a.transfer(sizes[i], access[i])
        mid[i] = env.now
        yield from b.transfer(sizes[i])
        end[i] = env.now

    for i in range(len(sizes)):
        env.process(one(i))
    env.run()
    a.stats(env.now), b.stats(env.now)  # the public view: settles a lone transfer's bookkeeping
    return np.asarray(mid), np.asarray(end), a, b


def test_bytes_are_conserved_with_mixed_disciplines_and_many_concurrent_transfers(trace_files):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from edgevlm.sim.bandwidth import ShiftedProfile, parse_csv

    csv_profile = parse_csv(trace_files["csv"])
    capacities = {
        "const": {"capacity_mbps": 10.0},
        "mahimahi": {"bandwidth_trace": {"kind": "mahimahi", "path": trace_files["mahimahi"], "bin_ms": 50}},
        "csv": {"bandwidth_trace": {"kind": "csv", "path": trace_files["csv"]}},
    }
    transfer = st.tuples(st.floats(0, 0.5), st.integers(1, 150_000), st.sampled_from(["none", "1", "4", "40", "trace"]),
                         st.floats(0, 2))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(transfer, min_size=1, max_size=120), st.sampled_from(["ps", "fifo"]),
           st.sampled_from(["ps", "fifo"]), st.sampled_from(sorted(capacities)), st.sampled_from(sorted(capacities)))
    def check(transfers, d1, d2, cap1, cap2):
        arrivals = [t[0] for t in transfers]
        sizes = [t[1] for t in transfers]
        access = [None if t[2] == "none" else ShiftedProfile(csv_profile, t[3]) if t[2] == "trace"
                  else float(t[2]) * 1e6 for t in transfers]
        first = LinkConfig(discipline=d1, overhead_bytes=0, propagation_ms=5, **capacities[cap1])
        second = LinkConfig(discipline=d2, overhead_bytes=0, **capacities[cap2])
        mid, end, a, b = _tandem(first, second, arrivals, sizes, access)
        assert np.isfinite(end).all()
        arr = np.asarray(arrivals)
        assert (mid >= arr).all() and (end >= mid).all()
        total = sum(sizes)
        assert a.bytes_carried == b.bytes_carried == total
        assert a.transfers == b.transfers == len(sizes)
        if isinstance(a, PsLink):
            assert a.n == 0 and not a._active
        # Transfer-seconds add up (Little's law bookkeeping) on both links.
        assert a.transfer_s == pytest.approx((mid - 0.005 - arr).sum(), rel=1e-9, abs=1e-9)
        assert b.transfer_s == pytest.approx((end - mid).sum(), rel=1e-9, abs=1e-9)
        if cap1 == "const":  # no window carries more than capacity: bits(arrived >= s, done <= t) <= C (t - s)
            out = mid - 0.005
            bits = np.asarray(sizes, dtype=float) * 8
            for s in arr:
                sel = (arr >= s)
                order = np.argsort(out[sel])
                carried = np.cumsum(bits[sel][order])
                assert (carried <= 10e6 * (out[sel][order] - s) * (1 + 1e-9) + 1e-3).all()
                for i in np.flatnonzero(sel):  # and none beats its own cap
                    cap = 10e6 if access[i] is None or not isinstance(access[i], float) else min(10e6, access[i])
                    assert out[i] - arr[i] >= bits[i] / cap * (1 - 1e-9) - 1e-12

    check()


@pytest.mark.parametrize("discipline", ["ps", "fifo"])
@pytest.mark.parametrize("count", [1, 3])
def test_backlog_is_the_unfinished_work(discipline, count):
    """8 Mbit/s drains 1 MB/s: `count` MB sent at t=0 leave count - t MB at time t."""
    env = simpy.Environment()
    ln = build_link(env, link(discipline))
    seen = []

    def probe():
        for t in (0.25, 0.5, 0.75, 1.5):
            yield env.timeout(t - env.now)
            seen.append((ln.backlog_bytes(), ln.backlog_s()))

    for _ in range(count):
        env.process(carry(ln, 1e6))
    env.process(probe())
    env.run()
    want = [max(0.0, count * 1e6 - t * 1e6) for t in (0.25, 0.5, 0.75, 1.5)]
    np.testing.assert_allclose([b for b, _ in seen], want, atol=1e-3)
    np.testing.assert_allclose([s for _, s in seen], np.array(want) / 1e6, atol=1e-9)


def test_maxmin_with_a_time_varying_access_trace(tmp_path):
    """C = 6. A's access trace gives 2 Mbit/s for 1 s, then 6. B is uncapped.
    [0,1): fair 3, A capped at 2, B gets 4. At t=1 A has 3 Mbit left, B 6: cap 6 > fair 3, so 3 each.
    A ends at 2.0; B has 3 left alone at 6 -> 2.5."""
    from edgevlm.sim.bandwidth import parse_csv

    path = tmp_path / "acc.csv"
    path.write_text("t_s,mbps\n0,2\n1,6\n")
    done, ps = drive(link("ps", capacity_mbps=6), [0, 0], [mbit(5), mbit(10)], access=[parse_csv(path), None])
    np.testing.assert_allclose(done, [2.0, 2.5], atol=1e-9)


def reference_maxmin_ps(capacity_bps, arrivals, sizes_bytes, caps):
    """A brute-force fluid max-min PS (O(n) water-filling per event) to check PsLink against."""
    n = len(arrivals)
    left = [s * 8.0 for s in sizes_bytes]
    done = [np.nan] * n
    order = sorted(range(n), key=lambda i: arrivals[i])
    active, t, k = [], 0.0, 0
    while k < n or active:
        rates = {}
        remaining, pending = capacity_bps, sorted(active, key=lambda i: caps[i] or np.inf)
        while pending:
            fair = remaining / len(pending)
            i = pending[0]
            if caps[i] is not None and caps[i] <= fair:
                rates[i] = caps[i]
                remaining -= caps[i]
                pending.pop(0)
            else:
                for j in pending:
                    rates[j] = fair
                break
        t_next_arrival = arrivals[order[k]] if k < n else np.inf
        t_next_finish = min((t + left[i] / rates[i] for i in active), default=np.inf)
        t_new = min(t_next_arrival, t_next_finish)
        for i in active:
            left[i] -= rates[i] * (t_new - t)
        t = t_new
        for i in list(active):
            if left[i] <= 1e-6:
                done[i] = t
                active.remove(i)
        while k < n and arrivals[order[k]] <= t:
            active.append(order[k])
            k += 1
    return np.asarray(done)


@pytest.mark.parametrize("seed", range(8))
def test_ps_matches_a_brute_force_maxmin_reference(seed):
    """Finish times equal a brute-force max-min fluid model (light and heavy load, caps and ties)."""
    rng = np.random.default_rng(seed)
    n = 150
    arrivals = np.sort(rng.uniform(0, [3.0, 1.0][seed % 2], n))
    if seed % 4 == 3:
        arrivals = np.round(arrivals, 1)  # batches arriving at the same instant
    sizes = rng.exponential(40_000, n) + 100
    caps = [None if c == 0 else float(c) * 1e6 for c in rng.choice([0, 0.5, 1, 2, 5], n)]
    done, _ = drive(link("ps", capacity_mbps=10), arrivals, sizes, access=caps)
    np.testing.assert_allclose(done, reference_maxmin_ps(10e6, arrivals, sizes, caps), rtol=1e-7, atol=1e-7)


def test_a_renewed_wake_up_carries_its_waiter_and_the_stale_one_fires_empty():
    """On an 8 Mbit/s PS link, A (1 MB, alone: 1 s, its wake-up scheduled at once) is joined at 0.5 s
    by B (1 MB): A's wake-up is replaced, its process moves onto the new one and resumes once, at the
    PS finish 1.5 s; B at 2 s. The stale event still fires at 1 s, with nobody waiting on it."""
    env = simpy.Environment()
    ln = PsLink(env, link(capacity_mbps=8))
    done, resumed, stale = {}, [], []

    def send(name, at_s):
        yield env.timeout(at_s)
        wait = ln.transfer(1_000_000)
        if name == "A":
            stale.append(wait[0])
        yield from wait
        resumed.append(name)
        done[name] = env.now

    env.process(send("A", 0.0))
    env.process(send("B", 0.5))
    env.run()
    assert done == pytest.approx({"A": 1.5, "B": 2.0}) and resumed == ["A", "B"]
    assert stale[0].processed and stale[0].callbacks is None  # fired at 1 s, with no callback left
