"""Prometheus metrics of the API, in one registry of its own."""

from bisect import bisect_left
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

registry = CollectorRegistry()

REQUESTS = Counter("chatmeter_requests", "HTTP requests answered", ["route", "status"], registry=registry)


class Latency:
    """Time to answer a metered chat call, as plain numbers read at scrape time (a Histogram takes a lock
    twice per observation)."""

    __slots__ = ("counts", "total")
    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

    def __init__(self):
        self.counts = [0] * (len(self.BUCKETS) + 1)  # the last: above every bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BUCKETS, seconds)] += 1  # a bucket counts what is <= its bound
        self.total += seconds

    def collect(self):
        family = HistogramMetricFamily("chatmeter_request_seconds", "time to answer a metered call", labels=["route"])
        counts = list(accumulate(self.counts))
        bounds = [*map(floatToGoString, self.BUCKETS), "+Inf"]
        family.add_metric(["chat"], list(zip(bounds, counts, strict=True)), self.total)
        yield family


CHAT_LATENCY = Latency()
registry.register(CHAT_LATENCY)


class Counts:
    """What every metered call counts, as plain integers read at scrape time (a Counter locks per increment)."""

    __slots__ = ("admitted", "clamped", "refused", "input_tokens", "output_tokens")

    def __init__(self):
        self.admitted = self.clamped = self.refused = self.input_tokens = self.output_tokens = 0

    def collect(self):
        admissions = CounterMetricFamily("chatmeter_admissions", "admission decisions", labels=["outcome"])
        for outcome in ("admitted", "clamped", "refused"):
            admissions.add_metric([outcome], getattr(self, outcome))
        yield admissions
        tokens = CounterMetricFamily("chatmeter_tokens_metered", "tokens metered", labels=["direction"])
        tokens.add_metric(["input"], self.input_tokens)
        tokens.add_metric(["output"], self.output_tokens)
        yield tokens


COUNTS = Counts()
registry.register(COUNTS)


class RuntimeCollector:
    """Reads the live state of a Runtime at scrape time."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        rt = self.runtime
        log = rt.log
        for name, doc, value in (
            ("chatmeter_open_holds", "holds placed and not yet settled", rt.admission.open_holds()),
            (
                "chatmeter_live_events",
                "events counted live since the snapshot in force, kept one by one",
                rt.admission.retained_events(),
            ),
            (
                "chatmeter_folded_windows",
                "windows summing the oldest live events (past max_retained: the snapshots have stopped coming)",
                rt.admission.folded_windows(),
            ),
            ("chatmeter_log_events_written", "events made durable by this writer", getattr(log, "events_written", 0)),
            ("chatmeter_log_batches", "group commits (one synchronous write each)", getattr(log, "batches", 0)),
            (
                "chatmeter_log_write_seconds",
                "time in the group commits' synchronous writes (their data on disk)",
                getattr(log, "write_seconds_total", 0),
            ),
            ("chatmeter_log_write_errors", "failed group commits", getattr(log, "write_errors", 0)),
            ("chatmeter_log_rolls", "WAL segments rolled into Parquet", getattr(log, "rolls", 0)),
            ("chatmeter_snapshot_errors", "limit snapshots refused (corrupt, or unreadable)", rt.snapshot_errors),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


def render() -> bytes:
    return generate_latest(registry)
