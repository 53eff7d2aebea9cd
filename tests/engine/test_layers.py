"""The engine's layers, checked on the source: modules reach the core only through iii.modules.api.

* Nothing but the package's entry point imports the server (``iii.engine.server``): the core, the builtins,
  metrics, the console and the HTTP trigger take the core.
* A module (``iii.modules.*``) imports nothing of ``iii.engine``: it is written against the interface alone,
  so that it can run inside the engine or as its own worker process.
* The core (``iii.engine.core``) imports no socket library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "iii"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("engine"), ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_entry_point_imports_the_server(path: Path) -> None:
    if path.name in ("server.py", "__init__.py") and path.parent == SRC / "engine":
        return
    assert "iii.engine.server" not in imported_modules(path)


@pytest.mark.parametrize("path", sources("modules"), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_import_nothing_of_the_engine(path: Path) -> None:
    engine_imports = {name for name in imported_modules(path) if name == "iii.engine" or name.startswith("iii.engine.")}
    assert not engine_imports, f"{path.name} imports {sorted(engine_imports)}"


def test_the_core_imports_no_socket_library() -> None:
    imports = imported_modules(SRC / "engine" / "core.py")
    sockets = {name for name in imports if name.split(".")[0] in ("picows", "aiohttp", "socket", "websockets")}
    sockets |= {name for name in imports if name in ("iii.engine.sockets", "iii.engine.server")}
    assert not sockets
