"""A small AST mutation-testing driver for the modules that decide (`make mutation`).

Why not mutmut: mutmut 3 names a mutant by its file path relative to the
working directory (stripping only ``src.``) and puts only ``.``, ``src`` and
``source`` on ``sys.path``; assay is one namespace package over three roots
(``server/``, ``client/``, ``proto/``), so ``server/assay/server/stats/x.py``
becomes ``server.assay.server.stats.x`` while the tests import
``assay.server.stats.x``, and mutmut stops with "tests recorded trampoline hits
but none match any mutant key".

How it works: each target module is parsed; every mutation point (operator
flips and boundary changes of comparisons, ``+``/``-`` and ``*``/``/`` swaps,
``and``/``or``, dropped ``not``, ``+1``/``-1`` on numeric constants, ``True``/
``False``, augmented-assignment flips) gives one mutant, written with
`ast.unparse` into a private copy of ``server/``. The target's unit tests then
run against that copy (``pytest -x`` in a child forked from the driver, which
has imported numpy, scipy and pytest once, so a run costs the tests rather
than the imports; Linux/macOS only) with a timeout of a few times their
baseline duration: a failing run kills the mutant, a timeout counts as killed
(the loops these modules correct can hang when mutated) and a pass survives.
Code inside ``raise`` statements (messages), docstrings and annotations is not
mutated. Mutants listed in ``scripts/mutation_equivalent.txt`` (equivalent to
the original: no test can tell them apart) are run too but left out of the
score, ``killed / (total - equivalent)``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT_FILE = ROOT / "scripts" / "mutation_equivalent.txt"

TARGETS: Mapping[str, Sequence[str]] = {
    "server/assay/server/stats/bootstrap.py": ["tests/unit/test_stats_bootstrap.py"],
    "server/assay/server/stats/estimate.py": ["tests/unit/test_stats_bootstrap.py"],
    "server/assay/server/stats/ranking.py": ["tests/unit/test_stats_ranking.py"],
    "server/assay/server/stats/order_statistics.py": ["tests/unit/test_stats_order_statistics.py"],
    "server/assay/server/stats/softmax.py": ["tests/unit/test_stats_softmax.py"],
    "server/assay/server/stats/bincount.py": ["tests/unit/test_stats_softmax.py"],
    "server/assay/server/ood/thresholds.py": [
        "tests/unit/test_stats_order_statistics.py",
        "tests/unit/test_ood_scorers.py",
    ],
    "server/assay/server/aigen/calibration.py": [
        "tests/unit/test_stats_order_statistics.py",
        "tests/unit/test_aigen_domain.py",
        "tests/unit/test_decision_edges.py",
    ],
    "server/assay/server/models/batcher.py": ["tests/unit/test_batcher.py"],
}
"""Module -> the unit tests that must kill its mutants."""

_COMPARE_SWAPS: Mapping[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}
_BINOP_SWAPS: Mapping[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}


@dataclass(frozen=True)
class Mutant:
    """One mutation: where it is and what it changes (``key`` is stable across runs)."""

    path: str
    index: int
    line: int
    kind: str
    source: str

    @property
    def key(self) -> str:
        """``path:line:kind``, the id used in the equivalent-mutant list."""
        return f"{self.path}:{self.line}:{self.kind}"


def _name(op: ast.AST) -> str:
    return type(op).__name__


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Ids of nodes never mutated: raise statements, docstrings, annotations."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(child) for child in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Raise):
            skip(node)
        elif isinstance(node, (ast.AnnAssign, ast.arg)):
            skip(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip(node.returns)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            skip(node)
    return skipped


def _points(node: ast.AST) -> Iterator[tuple[str, int]]:
    """(kind, variant) for every mutation of this one node."""
    if isinstance(node, ast.Compare):
        for position, op in enumerate(node.ops):
            for variant, new in enumerate(_COMPARE_SWAPS.get(type(op), ())):
                yield f"{_name(op)}->{new.__name__}#{position}", variant
    elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
        yield f"{_name(node.op)}->{_BINOP_SWAPS[type(node.op)].__name__}", 0
    elif isinstance(node, ast.BoolOp):
        yield ("And->Or" if isinstance(node.op, ast.And) else "Or->And"), 0
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop-not", 0
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield f"{node.value}->{not node.value}", 0
    elif isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        yield f"{node.value!r}+1", 0
        yield f"{node.value!r}-1", 1


def _apply(node: ast.AST, kind: str, variant: int) -> ast.AST:
    """The node with one mutation applied (a modified deep copy)."""
    new = copy.deepcopy(node)
    if isinstance(new, ast.Compare):
        position = int(kind.rsplit("#", 1)[1])
        new.ops[position] = _COMPARE_SWAPS[type(new.ops[position])][variant]()
    elif isinstance(new, ast.BinOp | ast.AugAssign):
        new.op = _BINOP_SWAPS[type(new.op)]()
    elif isinstance(new, ast.BoolOp):
        new.op = ast.Or() if isinstance(new.op, ast.And) else ast.And()
    elif isinstance(new, ast.UnaryOp):
        return new.operand
    elif isinstance(new, ast.Constant) and isinstance(new.value, bool):
        new.value = not new.value
    elif isinstance(new, ast.Constant):
        new.value = new.value + (1 if variant == 0 else -1)
    return new


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().visit(node)


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            ids.add(id(value))
    return ids


def generate_mutants(source: str, path: str) -> list[Mutant]:
    """Every mutant of a module's source, in source order.

    Args:
        source: The module's text.
        path: Its path (recorded in each mutant's key).

    Returns:
        One `Mutant` per mutation point and variant, with the mutated source.
    """
    tree = ast.parse(source)
    skipped = _skipped_nodes(tree) | _docstring_ids(tree)
    no_mutate = {
        number for number, text in enumerate(source.splitlines(), 1) if "pragma: no mutate" in text
    }
    mutants: list[Mutant] = []
    for node in ast.walk(tree):
        if id(node) in skipped or getattr(node, "lineno", None) in no_mutate:
            continue
        for kind, variant in _points(node):
            # _Replace finds the node by identity: the copy shares it with `tree`.
            mutated = _Replace(node, _apply(node, kind, variant)).visit(_clone_with(tree, node))
            text = ast.unparse(ast.fix_missing_locations(mutated))
            line = getattr(node, "lineno", 0)
            mutants.append(Mutant(path, len(mutants), line, kind, text))
    mutants.sort(key=lambda m: (m.line, m.kind, m.index))
    return mutants


def _clone_with(tree: ast.Module, keep: ast.AST) -> ast.Module:
    """A deep copy of `tree` that shares the node `keep` (so it can be found by identity)."""
    return copy.deepcopy(tree, memo={id(keep): keep})


def load_equivalent(path: Path = EQUIVALENT_FILE) -> set[str]:
    """Mutant keys declared equivalent (first field of each non-comment line)."""
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            keys.add(fields[0])  # a key may contain "#": only whole-line comments
    return keys


@dataclass(frozen=True)
class Outcome:
    """What the tests did to one mutant."""

    mutant: Mutant
    status: str
    """"killed", "survived" or "timeout"."""


PRELOAD = (
    "numpy",
    "scipy.optimize",
    "scipy.special",
    "scipy.stats",
    "sklearn.metrics",
    "cv2",
    "PIL.Image",
    "grpc",
    "pydantic",
    "pytest",
)
"""Third-party modules imported once in the driver, so each forked test run skips them."""


def _preload() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS threads across fork()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.dont_write_bytecode = True
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _child(
    workdir: Path, tests: Sequence[str], root: Path, source_root: str
) -> None:  # pragma: no cover
    """In the forked child: import assay from `workdir`, run the tests, exit with their code."""
    log = os.open(workdir / "pytest.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.path[:0] = [str(workdir / source_root), str(root / "client"), str(root / "proto")]
    os.chdir(root)
    code = 3
    try:
        import pytest

        code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
    finally:
        os._exit(code)


def _run_tests(
    workdir: Path, tests: Sequence[str], timeout_s: float, root: Path, source_root: str
) -> tuple[str, float]:
    """Run the tests in a forked child (the driver never imports assay itself)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        _child(workdir, tests, root, source_root)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        elapsed = time.perf_counter() - start
        if done:
            passed = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            return ("survived" if passed else "killed"), elapsed
        if elapsed > timeout_s:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", elapsed
        time.sleep(0.02)


def _workdir(root: Path, source_root: str) -> Path:
    """A private copy of the source root (no bytecode caches)."""
    workdir = Path(tempfile.mkdtemp(prefix="assay-mutate-"))
    shutil.copytree(
        root / source_root, workdir / source_root, ignore=shutil.ignore_patterns("__pycache__")
    )
    return workdir


def run_target(
    path: str,
    tests: Sequence[str],
    *,
    root: Path = ROOT,
    source_root: str = "server",
    timeout_factor: float = 5.0,
    min_timeout_s: float = 10.0,
) -> list[Outcome]:
    """Run every mutant of one module against its tests.

    Args:
        path: The module, relative to `root`.
        tests: Test paths, relative to `root`.
        root: The repository root (tests run from there).
        source_root: The folder under `root` copied and put on PYTHONPATH.
        timeout_factor: A mutant's timeout in multiples of the clean run's duration.
        min_timeout_s: The shortest timeout.

    Returns:
        One outcome per mutant.

    Raises:
        RuntimeError: If the tests fail on the unmutated module.
    """
    original = (root / path).read_text()
    workdir = _workdir(root, source_root)
    try:
        status, seconds = _run_tests(workdir, tests, 600.0, root, source_root)
        if status != "survived":
            log = (workdir / "pytest.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{path}: the tests fail ({status}) before any mutation:\n{log}")
        timeout = max(min_timeout_s, timeout_factor * seconds)
        outcomes = []
        for mutant in generate_mutants(original, path):
            (workdir / path).write_text(mutant.source)
            status = _run_tests(workdir, tests, timeout, root, source_root)[0]
            outcomes.append(Outcome(mutant, status))
        return outcomes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def score(outcomes: Sequence[Outcome], equivalent: set[str]) -> tuple[int, int, float]:
    """(detected, counted, percent): timeouts count as detected, equivalents not at all."""
    counted = [o for o in outcomes if o.mutant.key not in equivalent]
    detected = sum(o.status != "survived" for o in counted)
    return detected, len(counted), 100.0 * detected / max(1, len(counted))


def _report(outcomes: Sequence[Outcome], equivalent: set[str]) -> str:
    lines = []
    by_path: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_path.setdefault(outcome.mutant.path, []).append(outcome)
    for path, group in by_path.items():
        counts = Counter(o.status for o in group)
        marked = sum(o.mutant.key in equivalent for o in group)
        detected, counted, percent = score(group, equivalent)
        lines.append(
            f"{path}: {len(group)} mutants, killed {counts['killed']}, timeouts "
            f"{counts['timeout']}, survived {counts['survived']} ({marked} equivalent) "
            f"-> {detected}/{counted} = {percent:.1f} %"
        )
    survivors = [o for o in outcomes if o.status == "survived" and o.mutant.key not in equivalent]
    lines += [f"SURVIVED {o.mutant.key}" for o in survivors]
    ran = {o.mutant.path for o in outcomes}
    stale = {key for key in equivalent if key.split(":", 1)[0] in ran} - {
        o.mutant.key for o in outcomes if o.status == "survived"
    }
    lines += [f"NOTE listed as equivalent but not a survivor: {key}" for key in sorted(stale)]
    detected, counted, percent = score(outcomes, equivalent)
    lines.append(
        f"mutation score: {detected}/{counted} = {percent:.1f} % "
        f"({len(outcomes)} mutants, {len(outcomes) - counted} equivalent)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mutants of the selected targets; exit 1 below `--fail-under`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run targets whose path contains this")
    parser.add_argument("--jobs", type=int, default=1, help="targets run in parallel")
    parser.add_argument("--list", action="store_true", help="list mutants, run nothing")
    parser.add_argument("--fail-under", type=float, default=90.0, help="minimum score, percent")
    args = parser.parse_args(argv)
    _preload()
    targets = {p: t for p, t in TARGETS.items() if args.only in p}
    if args.list:
        for path in targets:
            for mutant in generate_mutants((ROOT / path).read_text(), path):
                print(mutant.key)
        return 0
    equivalent = load_equivalent()
    outcomes: list[Outcome] = []
    failed = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_target, path, tests): path for path, tests in targets.items()}
        for future in as_completed(futures):
            try:
                group = future.result()
            except RuntimeError as error:
                failed.append(futures[future])
                print(f"ERROR {error}", flush=True)
                continue
            outcomes += group
            print("\n".join(_report(group, equivalent).splitlines()[:-1]), flush=True)
    print(_report(outcomes, equivalent))
    passed = not failed and score(outcomes, equivalent)[2] >= args.fail_under
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
