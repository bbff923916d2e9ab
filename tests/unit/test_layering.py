"""Capabilities never import each other, nor the wire format.

``robustness/``, ``ood/``, ``aigen/`` (and later ``gate/``, ``monitoring/``)
take what they share from the shared layer (``stats/``, ``profiles/``,
``models/``, ``jobs/``); grpc and protobuf belong to ``services/`` alone. The
imports are read from the source with ``ast``, so a lazy import inside a
function counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import assay.server

SERVER = Path(assay.server.__file__).parent
CAPABILITIES = ("robustness", "ood", "aigen", "gate", "monitoring")
SHARED = ("stats", "profiles", "jobs", "models")
WIRE = ("grpc", "google.protobuf", "assay.v1")
FRONT_DOORS = ("assay.server.services", "assay.server.app")
PRESENT = [c for c in CAPABILITIES if (SERVER / c).is_dir()]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVER).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("assay", "server", *parts))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: list[str]) -> Iterator[tuple[int, str]]:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            for alias in node.names:  # `from assay.server import ood` imports a package
                yield node.lineno, f"{module}.{alias.name}"


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations(package: str, bad: list[str]) -> list[str]:
    found = []
    for path in sorted((SERVER / package).rglob("*.py")):
        for line, module in _imports(path):
            for prefix in bad:
                if _under(module, prefix):
                    found.append(f"{path.relative_to(SERVER)}:{line} imports {prefix}")
    return sorted(set(found))


def test_the_capabilities_exist() -> None:
    assert {"robustness", "ood", "aigen"} <= set(PRESENT)


@pytest.mark.parametrize("capability", PRESENT)
def test_capability_imports_no_sibling_and_no_wire_format(capability: str) -> None:
    siblings = [f"assay.server.{c}" for c in CAPABILITIES if c != capability]
    assert _violations(capability, [*siblings, *WIRE, *FRONT_DOORS]) == []


@pytest.mark.parametrize("shared", SHARED)
def test_the_shared_layer_imports_no_capability_and_no_front_door(shared: str) -> None:
    capabilities = [f"assay.server.{c}" for c in CAPABILITIES]
    assert _violations(shared, [*capabilities, *FRONT_DOORS]) == []


@pytest.mark.parametrize("shared", [s for s in SHARED if s != "models"])
def test_the_shared_layer_stays_free_of_the_wire_format(shared: str) -> None:
    # models/ is exempt: its Triton backend is a gRPC client by nature.
    assert _violations(shared, list(WIRE)) == []


def test_the_check_sees_relative_lazy_and_package_imports() -> None:
    assert list(_imports(SERVER / "ood" / "__init__.py"))  # the real files parse
    source = (
        "def f():\n"
        "    from ..robustness import calibration\n"
        "    import grpc.aio\n"
        "from assay.server import aigen\n"
        "from . import fitting\n"
    )
    found = {m for _, m in _imports_in(source, ["assay", "server", "ood"])}
    assert {"assay.server.robustness", "grpc.aio", "assay.server.aigen"} <= found
    assert "assay.server.ood.fitting" in found
    assert not any(_under(m, "assay.server.robustness") for m in ("assay.server.robustnessx",))
