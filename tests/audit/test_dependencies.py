"""`fedrec.audit` depends on `fedrec.common` only (DESIGN, "Code map"): no module under `audit/`
imports the client, the server, the simulation or the CLI — not even lazily inside a function —
and the ledger audit runs without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

AUDIT = Path(__file__).resolve().parents[2] / "audit"
FORBIDDEN = ("fedrec.client", "fedrec.server", "fedrec.simulation", "fedrec.cli")
MODULES = sorted(AUDIT.rglob("*.py"))


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, a module of `package`, at any depth:
    `import a.b`, `from a import b` (as `a` and `a.b`), relative imports resolved against
    `package`, and `importlib.import_module("a.b")` / `__import__("a.b")` with a literal name."""
    parts = package.split(".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) in ("__import__", "import_module"))):
            found.append((node.lineno, node.args[0].value))
    return found


def forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_the_audit_package_is_where_the_test_looks():
    assert {p.name for p in MODULES} >= {"__init__.py", "run.py", "mechanisms.py", "report.py",
                                         "attack.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(AUDIT)))
def test_no_audit_module_imports_client_server_simulation_or_cli(path):
    package = ".".join(["fedrec", *path.relative_to(AUDIT.parent).parent.parts])
    bad = [f"line {line}: {module}" for line, module in imported_modules(path.read_text(), package)
           if forbidden(module)]
    assert not bad, f"{path.name} imports outside fedrec.common: {bad}"


def test_lazy_relative_and_dynamic_imports_are_found():
    source = ("def f():\n    from fedrec.client import dp\n"
              "from .. import server\n"
              "from ..simulation.run import simulate\n"
              "import importlib\nimportlib.import_module('fedrec.cli.main')\n"
              "from fedrec import common\nfrom . import mechanisms\n")
    modules = {m for _, m in imported_modules(source, "fedrec.audit")}
    assert {"fedrec.common", "fedrec.audit.mechanisms"} <= modules
    assert sorted(m for m in modules if forbidden(m)) == [
        "fedrec.cli.main", "fedrec.client", "fedrec.client.dp", "fedrec.server",
        "fedrec.simulation.run", "fedrec.simulation.run.simulate"]


def test_the_ledger_audit_and_its_report_import_without_torch_or_flower():
    code = ("import sys\nimport fedrec.audit.run, fedrec.audit.report\n"
            "print(sorted(m for m in ('torch', 'flwr', 'ray', 'opacus') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
