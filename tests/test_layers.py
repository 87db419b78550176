"""The package's shape: its layers import only downward, only the GPU side imports the GPU stack, and no
module or function grows past what a reader takes in at once.

vocabulary (0) < model (1) < planner (2) < measure (3) < verify (4) < views (5) < cli (6). A module may import
its own layer and those below it; an import of a higher layer, at module level or inside a function, fails
here. torch, diffusers, the official `wan` package and pynvml are imported only by measure (and its tests);
scikit-learn only by the model's fitting module, which `plan` never imports.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wanfit"
LAYERS = {"vocabulary": 0, "model": 1, "planner": 2, "measure": 3, "verify": 4, "views": 5, "cli": 6}
GPU_STACK = ("torch", "diffusers", "wan", "pynvml", "accelerate", "transformers", "torchao", "optimum")
FITTING_ONLY = ("sklearn",)
FITTING_MODULES = ("wanfit.model.fitting",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of a wanfit module; the package's own __init__ (its version) sits at the bottom."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, function-level imports included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "wanfit" else [node.module]
            out += [(node.lineno, name) for name in names]
    return out


def wrong_way_imports(files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        me = module_name(path)
        for line, target in imported_modules(path):
            if target.startswith("wanfit.") and target != "wanfit.__version__" and layer_of(target) > layer_of(me):
                bad.append(f"{me}:{line} imports {target} (a higher layer)")
            root = target.split(".")[0]
            if root in GPU_STACK and not me.startswith("wanfit.measure"):
                bad.append(f"{me}:{line} imports {target} (the GPU stack belongs to wanfit.measure)")
            if root in FITTING_ONLY and me not in FITTING_MODULES:
                bad.append(f"{me}:{line} imports {target} (scikit-learn belongs to {FITTING_MODULES[0]})")
    return bad


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in package_files():
        parts = module_name(path).split(".")
        assert len(parts) == 1 or parts[1] in LAYERS, f"{path} is in no layer folder"


def test_imports_only_go_down_the_layers():
    assert wrong_way_imports(package_files()) == []


@pytest.mark.parametrize(("module", "code", "offence"), [
    ("vocabulary/workload.py", "from wanfit.model.predict import predict\n", "higher layer"),
    ("model/features.py", "def f():\n    from wanfit.planner.advise import advise\n", "higher layer"),
    ("planner/api.py", "def f():\n    import torch\n", "GPU stack"),
    ("verify/run.py", "import pynvml\n", "GPU stack"),
    ("planner/advise.py", "from sklearn.linear_model import LinearRegression\n", "scikit-learn"),
])
def test_a_wrong_way_import_is_caught(tmp_path, module, code, offence):
    fake = tmp_path / "wanfit" / module
    fake.parent.mkdir(parents=True)
    fake.write_text(code)
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "wanfit"
    try:
        assert any(offence in b for b in wrong_way_imports([fake]))
    finally:
        PACKAGE = saved


MODULE_MAX_LINES = 400
FUNCTION_MAX_LINES = 80


def oversized(files: list[Path]) -> list[str]:
    """Modules over MODULE_MAX_LINES lines and functions over FUNCTION_MAX_LINES: split along their seams."""
    out = []
    for path in files:
        source = path.read_text()
        if (n := len(source.splitlines())) > MODULE_MAX_LINES:
            out.append(f"{module_name(path)}: {n} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                    and (n := node.end_lineno - node.lineno + 1) > FUNCTION_MAX_LINES:
                out.append(f"{module_name(path)}.{node.name}: {n} lines")
    return out


def test_modules_and_functions_stay_readable():
    assert oversized(package_files()) == []


def test_an_oversized_function_is_caught(tmp_path):
    fake = tmp_path / "wanfit" / "model" / "long.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n" + "    x = 1\n" * FUNCTION_MAX_LINES)
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "wanfit"
    try:
        assert oversized([fake]) == ["wanfit.model.long.f: 81 lines"]
    finally:
        PACKAGE = saved
