"""The shape the code promises (issue #12): short functions with few parameters, packages that
import in one direction, one owner of the run directory's layout, imports without side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minitx"
MAX_BODY_LINES = 80
MAX_PARAMETERS = 8


def _modules() -> dict[str, ast.Module]:
    trees = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        trees[name.removesuffix(".__init__")] = ast.parse(path.read_text(encoding="utf-8"))
    return trees


def _functions():
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield module, node


def test_functions_are_short():
    """Body lines, from the first statement: a Typer command's option declarations don't count."""
    long = [
        f"{module}.{node.name}: {node.end_lineno - node.body[0].lineno + 1} lines"
        for module, node in _functions()
        if node.end_lineno - node.body[0].lineno + 1 > MAX_BODY_LINES
    ]
    assert long == []


def _is_command(node) -> bool:
    """A Typer command (`@app.command(...)`): its parameters are the command's options."""
    return any("app.command" in ast.unparse(decorator) for decorator in node.decorator_list)


def test_functions_take_few_parameters():
    many = []
    for module, node in _functions():
        if _is_command(node):
            continue
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        names = [name for name in names if name not in ("self", "cls")]
        if len(names) > MAX_PARAMETERS:
            many.append(f"{module}.{node.name}: {len(names)} parameters")
    assert many == []


def _unit(module: str) -> str:
    """The node of the import graph: a subpackage (minitx.training) or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(tree: ast.Module) -> set[str]:
    """Every minitx module imported anywhere in `tree`, except under `if TYPE_CHECKING:`."""
    found = set()
    for node in ast.walk(tree):  # type-only blocks first: ast.walk queues children before yielding
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minitx"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minitx")}
    return found


def test_packages_import_each_other_in_one_direction():
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for module, tree in modules.items():
        targets = {_unit(name) for name in _imports(tree) if name in modules}
        edges.setdefault(_unit(module), set()).update(targets - {_unit(module), "minitx"})

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for target in sorted(edges.get(path[-1], ())):
            if target == start:
                return [*path, target]
            if target not in path:
                found = cycle_from(start, [*path, target])
                if found:
                    return found
        return None

    cycles = [" → ".join(c) for unit in sorted(edges) if (c := cycle_from(unit, [unit]))]
    assert cycles == []


LOWER = ("model", "data", "training", "tasks", "inference", "export", "config")
UPPER = ("cli", "serve", "views")


def _package(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_lower_packages_never_import_the_front_ends():
    """The front ends (command line, HTTP server, pages and plots) sit on top: nothing below them
    imports one, so each can be replaced or left out without touching the library."""
    upward = sorted(
        f"{module} imports {name}"
        for module, tree in _modules().items()
        if _package(module) in LOWER
        for name in _imports(tree)
        if _package(name) in UPPER
    )
    assert upward == []


def test_a_small_ground_floor_and_modules_a_reader_can_hold():
    top_level = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top_level) <= 8, top_level
    long = [
        f"{path.relative_to(PACKAGE.parent)}: {n} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    ]
    assert long == []


def test_only_the_tasks_package_compares_task_names():
    """A new task is one module and one registry line: no code elsewhere branches on a task's
    name. (Dictionary keys that happen to read the same, like a result's "translation", are not
    comparisons.)"""
    from minitx.tasks import _TASKS

    found = []
    for module, tree in _modules().items():
        if _package(module) == "tasks":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            if isinstance(node.ops[0], (ast.In, ast.NotIn)):  # `task in ("a", "b")`, not `"a" in d`
                sides = [
                    e
                    for s in sides
                    if isinstance(s, (ast.Tuple, ast.List, ast.Set))
                    for e in s.elts
                ]
            found += [
                f"{module}:{node.lineno} {ast.unparse(node)}"
                for side in sides
                if isinstance(side, ast.Constant) and side.value in _TASKS
            ]
    assert found == []


def test_only_run_dir_spells_the_run_directory_layout():
    names = {"config.yaml", "tokenizer.json", "labels.json", "checkpoints", "metrics.jsonl"}
    names |= {"train.log", "tensorboard", "curves.png", ".lock", "plots", "cache"}
    spelled = [
        f"{module}:{node.lineno} {node.value!r}"
        for module, tree in _modules().items()
        if module != "minitx.run_dir"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in names or node.value.startswith(tuple(f"{n}/" for n in names | {"eval"})))
    ]
    assert spelled == []


def test_importing_minitx_changes_nothing_outside_it():
    """No datasets progress bars switched off, no matplotlib backend or pyplot, no malloc tuning
    until a command asks for them."""
    modules = sorted(_modules())
    script = f"""
import ctypes, sys
calls = []
class Recorder:
    def __init__(self, *args, **kwargs): pass
    def __getattr__(self, name): return lambda *args: calls.append(name)
ctypes.CDLL = Recorder
import importlib
for name in {modules!r}:
    if name != "minitx.__main__":
        importlib.import_module(name)
import datasets
assert datasets.utils.logging.is_progress_bar_enabled(), "datasets progress bars switched off"
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported (it picks a backend)"
assert calls == [], calls
print("clean")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "clean", result.stderr
