"""The tree is the pipeline: packages of src/trimdm import only downward, and every function reads in
one screen. Walks every module with `ast`, imports inside functions included."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "trimdm"
# lower to higher; a package may import only packages of a lower layer (siblings of one layer neither)
LAYERS = [("__init__", "fileio", "streams", "model", "optim", "distributed"), ("tokenizers",), ("sequence",),
          ("diffusion",), ("config",), ("data", "recipes"), ("train",), ("sample",), ("eval",), ("study",),
          ("serve",), ("demo",), ("cli",), ("__main__",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_FUNCTION_LINES = 80


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path.name == "__init__.py"


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported trimdm module, line) of every import in `source`, at any depth (functions included)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            prefix = base[:len(base) - node.level + 1] if node.level else []
            names = [".".join(prefix + ([node.module] if node.module else []))]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(name, node.lineno) for name in names if name == "trimdm" or name.startswith("trimdm.")]
    return out


def package_imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the places ("file:line") that import across them."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path, module, is_package in _modules():
        for name, line in imports_of(path.read_text(), module, is_package):
            src, dst = _package(module), _package(name)
            if src != dst:
                edges.setdefault((src, dst), []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def upward(edges) -> dict[str, list[str]]:
    return {f"{src} -> {dst}": where for (src, dst), where in edges.items() if RANK.get(dst, -1) >= RANK.get(src, -1)}


def test_every_package_has_a_layer():
    packages = {_package(m) for _, m, _ in _modules()}
    assert packages <= set(RANK), f"give these a layer in LAYERS: {sorted(packages - set(RANK))}"


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for src, dst in package_imports():
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [node, nxt])}"
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_packages_import_only_downward():
    wrong = upward(package_imports())
    assert not wrong, f"imports against the pipeline's order: {wrong}"


def test_no_function_is_longer_than_a_screen():
    long = []
    for path, _, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checks_see_an_upward_import_hidden_in_a_function():
    source = "import torch\n\n\ndef f():\n    from trimdm.eval.run import evaluate_run\n    return evaluate_run\n"
    found = imports_of(source, "trimdm.train.trainer", is_package=False)
    assert found == [("trimdm.eval.run", 5)]
    assert upward({("train", "eval"): ["train/trainer.py:5"]}) == {"train -> eval": ["train/trainer.py:5"]}
    relative = imports_of("from ..data import prepare\n", "trimdm.train.trainer", is_package=False)
    assert relative == [("trimdm.data", 1)]
