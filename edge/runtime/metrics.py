"""The gateway's metrics registry (Prometheus data model, one registry per app).

Components ask for a metric by name and get the same object every time, so a module
can declare its metrics where it uses them. Count per batch, never per point in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

if TYPE_CHECKING:
    from edge.runtime.links import LinkBoard

_M = TypeVar("_M", Counter, Gauge, Histogram)

# Reaction times of the fast path are in the 10 us .. 10 ms range.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._links: LinkBoard | None = None

    @property
    def links(self) -> LinkBoard:
        """The link board of this registry (one per gateway, as the registry is), so every
        component that has the metrics reaches the same board."""
        if self._links is None:
            from edge.runtime.links import LinkBoard

            self._links = LinkBoard(self)
        return self._links

    def _get(self, cls: type[_M], name: str, doc: str, labels: Sequence[str], **kw: object) -> _M:
        m = self._metrics.get(name)
        if m is None:
            m = cls(name, doc, list(labels), registry=self.registry, **kw)  # type: ignore[arg-type]
            self._metrics[name] = m
        if not isinstance(m, cls):
            raise TypeError(f"metric {name} already registered as {type(m).__name__}")
        return m

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._get(Histogram, name, doc, labels, buckets=tuple(buckets))

    def snapshot(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Flat ``name{label="v"} -> value`` view, for status, tests and self-metrics.

        ``names`` limits it to those metrics: a family with a label per device holds
        thousands of series, and collecting all of them held the event loop ~10 ms."""
        out: dict[str, float] = {}
        families = self.registry.collect() if names is None else (
            f for n in names if (m := self._metrics.get(n)) is not None for f in m.collect()
        )
        for family in families:
            for s in family.samples:
                if s.labels:
                    lbl = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                    out[f"{s.name}{{{lbl}}}"] = s.value
                else:
                    out[s.name] = s.value
        return out

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
