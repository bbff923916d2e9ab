"""The mutation driver (scripts/mutate.py): mutant generation and one tiny end-to-end run."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate"] = module
    spec.loader.exec_module(module)
    return module


SOURCE = textwrap.dedent(
    '''
    """Docstring 1 is not mutated."""

    __all__ = ["f"]

    LIMIT: int = 3


    def f(x: int = 2) -> bool:
        """Neither is this."""
        if x < 0:
            raise ValueError(f"bad {x + 1}")
        return x >= LIMIT and not x == 7
    '''
)


def test_generation_covers_every_operator_and_skips_messages_and_annotations() -> None:
    mutate = load_driver()
    mutants = mutate.generate_mutants(SOURCE, "m.py")
    kinds = sorted(m.kind for m in mutants)
    assert kinds == sorted([
        "3+1", "3-1",  # LIMIT
        "2+1", "2-1",  # the default of x
        "Lt->LtE#0", "Lt->GtE#0", "0+1", "0-1",  # x < 0 (its raise is left alone)
        "GtE->Gt#0", "GtE->Lt#0", "And->Or", "drop-not",
        "Eq->NotEq#0", "7+1", "7-1",
    ])  # fmt: skip
    for mutant in mutants:
        assert mutant.key == f"m.py:{mutant.line}:{mutant.kind}"
        assert ast.dump(ast.parse(mutant.source)) != ast.dump(ast.parse(SOURCE))
        assert "bad {x + 1}" in mutant.source and "Docstring 1" in mutant.source


def test_equivalent_list_and_score(tmp_path: Path) -> None:
    mutate = load_driver()
    listing = tmp_path / "equivalent.txt"
    listing.write_text("# comment\nm.py:3:Lt->LtE#0   the branch returns 0 either way\n\n")
    assert mutate.load_equivalent(listing) == {"m.py:3:Lt->LtE#0"}
    assert mutate.load_equivalent(tmp_path / "missing.txt") == set()
    mutants = [
        mutate.Mutant("m.py", i, 3, kind, "") for i, kind in enumerate(["Lt->LtE#0", "a", "b"])
    ]
    outcomes = [
        mutate.Outcome(mutants[0], "survived"),
        mutate.Outcome(mutants[1], "timeout"),
        mutate.Outcome(mutants[2], "survived"),
    ]
    assert mutate.score(outcomes, {"m.py:3:Lt->LtE#0"}) == (1, 2, 50.0)


def test_end_to_end_on_a_tiny_module(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "smoke_clamp.py").write_text(
        "def clamp(x):\n    if x < 0:\n        return 0\n    return x\n"
    )
    (tmp_path / "test_smoke_clamp.py").write_text(
        "from smoke_clamp import clamp\n\n\n"
        "def test_clamp():\n    assert (clamp(-1), clamp(0), clamp(2)) == (0, 0, 2)\n"
    )
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "scripts")!r})
        import mutate
        import pytest  # imported once here, as the driver's preload does, not per fork
        root = Path({str(tmp_path)!r})
        outcomes = mutate.run_target(
            "src/smoke_clamp.py", ["test_smoke_clamp.py"], root=root, source_root="src"
        )
        for o in outcomes:
            print(o.mutant.kind, o.status)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    outcomes = sorted(tuple(line.split()) for line in done.stdout.splitlines())
    assert outcomes == [
        ("0+1", "killed"),  # return 1
        ("0+1", "survived"),  # x < 1: a real gap, clamp(0.5) would be 0 and no test tries it
        ("0-1", "killed"),
        ("0-1", "killed"),
        ("Lt->GtE#0", "killed"),
        ("Lt->LtE#0", "survived"),  # equivalent: clamp(0) is 0 either way
    ]
