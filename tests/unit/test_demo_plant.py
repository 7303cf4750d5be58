"""The demo's simulated etch tool lets the tour show what it promises."""

from __future__ import annotations

import tomllib
from pathlib import Path

from edge.demo import DEMO_CONFIG, plant_config
from hw_sim.etch import EtchConfig, EtchModel

DT_S = 0.1


def test_a_reset_right_after_the_trip_is_refused_for_seconds(tmp_path: Path) -> None:
    """After the stop, the demo chamber stays above the interlock's clear level (limit less
    hysteresis) for at least 5 s, so a reset from the tour is refused before it takes."""
    ports = dict.fromkeys(("modbus", "mqtt", "mes", "mes_admin"), 1)
    etch = plant_config(tmp_path, ports)["etch"]
    opts = {k: v for k, v in etch.items() if k in EtchConfig.__dataclass_fields__}
    rule = tomllib.loads(DEMO_CONFIG.read_text(encoding="utf-8"))["interlocks"][0]
    clear_c = rule["high"] - rule["clear_hysteresis"]
    model = EtchModel(42, EtchConfig(**opts))  # its scheduled excursion trips the interlock
    t_s, stopped_s = 0.0, None
    while t_s < 200.0:
        model.step(DT_S)
        t_s += DT_S
        true_c = model.base_c + model.offset_c
        if stopped_s is None and true_c > rule["high"]:
            model.stop()
            stopped_s = t_s
        elif stopped_s is not None and true_c < clear_c:
            break
    assert stopped_s is not None, "the excursion never crossed the limit"
    assert t_s - stopped_s >= 5.0, f"clear {t_s - stopped_s:.1f} s after the stop"
