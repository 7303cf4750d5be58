"""``[[interlocks]]``: one rule on one tag, the command it sends, and the check that
every command can be sent.

Invariants:

* A rule is checked when the file is loaded: limits finite and ordered, at least one
  condition, debounce, hysteresis, rate window and evidence in range.
* Every rule's command names a configured source and an action that source declares
  (``check_actions``, run by ``build_stages`` for check-config and run alike): a stop
  that cannot be sent is a config error, never a surprise when the interlock trips.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import TagRegistry


class InterlockAction(ConfigStruct, frozen=True):
    """The command sent through a source's write-back port when the interlock trips;
    ``action`` must be one the source declares (its ``commands`` table).

    ``reset`` is the command sent when an operator's reset takes (the tool restarts):
    unset, the source's ``reset`` action when it declares one; ``""``, none (someone
    restarts the tool at the tool); a name, that action, which the source must declare."""

    source: str
    action: str = "stop"
    target: str = ""
    reset: str | None = None

    def reset_action(self, declared: frozenset[str]) -> str:
        """The action a reset sends ("" for none), given the source's ``declared`` ones."""
        if self.reset is None:
            return "reset" if "reset" in declared else ""
        return self.reset

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("source must name the source whose write-back port stops it")
        if not self.action:
            raise ValueError("action must not be empty")


class InterlockRuleConfig(ConfigStruct, frozen=True):
    """``[[interlocks]]``: one rule on one tag."""

    name: str
    tag: str
    action: InterlockAction
    high: float | None = None
    low: float | None = None
    debounce_samples: int = 1
    debounce_s: float = 0.0
    clear_hysteresis: float = 0.0
    rate_limit_per_s: float | None = None
    rate_window_s: float = 0.0
    stale_s: float | None = None
    trip_on_bad_quality: bool = True
    context_tags: tuple[str, ...] = ()
    evidence_samples: int = 20
    severity: int = 900  # of its alarm condition, OPC-UA's 1 (least) to 1000 (most urgent)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if not 1 <= self.severity <= 1000:
            raise ValueError("severity must be between 1 and 1000")
        if self.tag.count("/") < 1:
            raise ValueError(f"tag must be 'device/name', got {self.tag!r}")
        for key in ("high", "low"):
            v = getattr(self, key)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{key} must be a finite number")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low must be below high ({self.low} >= {self.high})")
        if (self.high is None and self.low is None and self.rate_limit_per_s is None
                and self.stale_s is None and not self.trip_on_bad_quality):
            raise ValueError(
                "high, low, rate_limit_per_s, stale_s or trip_on_bad_quality must be set")
        if self.debounce_samples < 1:
            raise ValueError("debounce_samples must be >= 1")
        if self.debounce_s < 0:
            raise ValueError("debounce_s must be >= 0")
        if self.clear_hysteresis < 0:
            raise ValueError("clear_hysteresis must be >= 0")
        if self.rate_limit_per_s is not None and not self.rate_limit_per_s > 0:
            raise ValueError("rate_limit_per_s must be > 0")
        if not 0 <= self.rate_window_s <= 3600:
            raise ValueError("rate_window_s must be between 0 and 3600")
        if self.stale_s is not None and not self.stale_s > 0:
            raise ValueError("stale_s must be > 0")
        if not 0 <= self.evidence_samples <= 10_000:
            raise ValueError("evidence_samples must be between 0 and 10000")

    def declare_tags(self, tags: TagRegistry) -> None:
        """An interlock adds no tags (it judges tags that sources declare)."""

    def params(self) -> npt.NDArray[np.float64]:
        from edge.processing import kernels as K

        p = np.empty(K.N_IL_PARAMS)
        p[0] = math.inf if self.high is None else self.high
        p[1] = -math.inf if self.low is None else self.low
        p[2] = self.debounce_samples
        p[3] = round(self.debounce_s * 1e9)
        p[4] = self.clear_hysteresis
        p[5] = math.inf if self.rate_limit_per_s is None else self.rate_limit_per_s
        p[6] = 1.0 if self.trip_on_bad_quality else 0.0
        p[7] = round(self.rate_window_s * 1e9)
        return p


def check_actions(
    rules: Sequence[InterlockRuleConfig], actions: Mapping[str, frozenset[str]]
) -> None:
    """Every rule's action names a configured source and an action it declares
    (``actions``: source name -> its actions). A ConfigError lists each rule that does
    not, one line each: found at check-config, never when the interlock trips."""
    problems: list[str] = []
    for rule in rules:
        act = rule.action
        declared = actions.get(act.source)
        if declared is None:
            problems.append(
                f"interlock '{rule.name}': action: no source named '{act.source}' "
                f"(sources: {', '.join(sorted(actions)) or 'none'})"
            )
        elif act.action not in declared:
            has = f"it has: {', '.join(sorted(declared))}" if declared else \
                "it takes no commands"
            problems.append(
                f"interlock '{rule.name}': action: source '{act.source}' has no action "
                f"'{act.action}' ({has})"
            )
        if declared is not None and act.reset and act.reset not in declared:
            has = f"it has: {', '.join(sorted(declared))}" if declared else \
                "it takes no commands"
            problems.append(
                f"interlock '{rule.name}': action.reset: source '{act.source}' has no "
                f"action '{act.reset}' ({has}; \"\" sends no command on reset)"
            )
    if problems:
        raise ConfigError("\n".join(problems))
