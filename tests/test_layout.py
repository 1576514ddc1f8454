"""The installed import root is ``layerplan``: a user's own ``solver.py`` / ``planner.py`` beside
their script shadows nothing, and the pure solver never pulls in torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import layerplan
from layerplan import solver
from layerplan.planner.spec import PlanSpec
spec = PlanSpec.from_kwargs("gpt2", max_memory={"cpu": "4GiB"}, seq_len=16)
plan = layerplan.plan(spec)
assert plan.device_map == {"": "cpu"}, plan.device_map
assert solver.__name__ == "layerplan.solver"
import planner, solver as theirs
assert planner.MINE and theirs.MINE  # the user's modules are the ones `import planner` finds
print("ok")
"""


def test_a_users_solver_py_and_planner_py_shadow_nothing(tmp_path: Path) -> None:
    (tmp_path / "solver.py").write_text("MINE = True\n")
    (tmp_path / "planner.py").write_text("MINE = True\n")
    (tmp_path / "script.py").write_text(SCRIPT)
    result = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_public_names_resolve_lazily_and_list_in_dir() -> None:
    code = ("import sys, layerplan; names = dir(layerplan); "
            "assert {'plan', 'PlanSpec', 'InvalidSpecError'} <= set(names), names; "
            "assert 'torch' not in sys.modules; layerplan.PlanSpec; assert 'torch' not in sys.modules; "
            "layerplan.plan; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
