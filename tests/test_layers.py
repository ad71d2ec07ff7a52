"""The architecture as a test: which raybench modules may import which, and which never import torch or Ray."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raybench"

# module (or package) -> the raybench modules it may import. The arrows run one way: facts at the bottom
# (catalog, spec), then the core a trial is made of, then the Ray edge; the report reads results only.
ALLOWED = {
    "catalog": set(),
    "files": set(),
    "spec": {"catalog"},
    "stopping": {"spec"},
    "grid": {"catalog", "spec"},
    "metrics": set(),
    "data": {"catalog", "data", "files"},
    "results": {"catalog", "files"},
    "models": {"catalog", "models"},
    "batches": {"catalog"},
    "compiled": set(),
    "distributed": set(),  # torch.distributed only: the processes come from Ray Train (service.data_parallel)
    "loop": {"batches", "catalog", "compiled", "distributed", "files", "spec", "stopping"},
    "resources": {"catalog", "models", "spec"},
    "trial": {
        *("batches", "catalog", "compiled", "data", "distributed", "loop", "metrics", "models", "resources"),
        *("results", "spec"),
    },
    "train": {"catalog", "data", "loop", "results", "spec", "trial"},
    "report": {
        "catalog",
        "data",
        "metrics",
        "provenance",
        "report",
        "results",
        "spec",
    },  # data: fig. 4.3 reads the cache; spec: the input modes
    "console": {"spec", "stopping"},
    "projection": {
        "batches",
        "catalog",
        "distributed",
        "loop",
        "models",
        "provenance",
        "spec",
        "stopping",
    },  # how long: the dry run
    "mps": set(),
    "provenance": {"files"},
    "service": {
        *("console", "data", "grid", "loop", "models", "mps", "provenance", "resources", "results", "service"),
        *("distributed", "projection", "spec", "trial"),
    },
    "run": {"service"},
    "__main__": {"data", "report", "service", "train"},  # the `raybench` command: each subcommand's own main
}
RAY_EDGE = {"service"}
TORCH_FREE = {
    "catalog",
    "files",
    "spec",
    "stopping",
    "grid",
    "results",
    "metrics",
    "data",
    "report",
    "console",
    "mps",
    "provenance",
}


def unit(path: Path) -> str:
    """The layer a source file belongs to: its module, or its package's name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imports(path: Path) -> set[str]:
    """Top-level names this file imports (raybench modules as 'raybench.X')."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "raybench":
                found |= {f"raybench.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # relative: inside its own package
            found.add(f"raybench.{unit(path)}")
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "embedded" not in p.parts)


def dotted(path: Path) -> str:
    return ".".join(("raybench", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        names = imports(path)
        graph.setdefault(unit(path), set()).update(
            n.split(".")[1] for n in names if n.startswith("raybench.") and n.split(".")[1] != unit(path)
        )
    return graph


def test_every_module_has_a_layer():
    assert set(import_graph()) == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_follow_the_layers(module):
    extra = import_graph()[module] - ALLOWED[module]
    assert not extra, f"raybench.{module} imports {sorted(extra)}, which its layer may not"


def test_only_the_ray_edge_imports_ray():
    for path in SOURCES:
        ray_imports = {n for n in imports(path) if n == "ray" or n.startswith("ray.")}
        assert not ray_imports or unit(path) in RAY_EDGE, f"{path.relative_to(PACKAGE)} imports {sorted(ray_imports)}"


def test_the_torch_free_layers_load_and_expand_the_thesis_grid_with_torch_and_ray_blocked():
    code = "\n".join(
        [
            "import sys",
            "for name in ('torch', 'torchvision', 'mlp_mixer_pytorch', 'ray'):",
            "    sys.modules[name] = None  # any import of them raises ImportError",
            *(f"import {dotted(p)}" for p in SOURCES if unit(p) in TORCH_FREE and p.name != "__main__.py"),
            "from raybench import grid",
            f"g = grid.load_grid({str(PACKAGE.parent / 'grids' / 'thesis.py')!r})",
            "print(len(g.trials))",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "99"
