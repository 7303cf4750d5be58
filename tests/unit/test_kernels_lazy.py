"""The kernels package loads a stage's kernel module only when one of its names is used."""

from __future__ import annotations

import importlib
import subprocess
import sys

from edge.processing import kernels as K


def test_names_table_matches_the_modules() -> None:
    """Every public name of every kernel module is reachable as ``K.<name>``, from its module."""
    for module, names in K.NAMES.items():
        mod = importlib.import_module(f"edge.processing.kernels.{module}")
        public = {n for n, v in vars(mod).items() if not n.startswith("_")
                  and ((callable(v) and getattr(v, "__module__", None) == mod.__name__)
                       or isinstance(v, int))}
        assert public == set(names), module
        for name in names:
            assert getattr(K, name) is getattr(mod, name)


def test_using_one_stage_loads_only_its_module() -> None:
    """``K.interlock_scan`` imports the interlock kernels and none of the others."""
    code = (
        "import sys\n"
        "from edge.processing import kernels as K\n"
        "K.interlock_scan\n"
        "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules\n"
        "             if m.startswith('edge.processing.kernels.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert out.strip() == "['_base', 'interlock']"
