"""The layout's rules (DESIGN.md): imports point down the data's path only, nothing imports `eval/` but the
command line, the engine's modules form no import circle, and both sides of the process boundary use the one
contract module while the add-on never loads torch or the engine's heavy modules."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "serep_engine"
# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = [
    # base: the contract, where files are, atomic writes, the device, stand-ins for what dependencies import unused
    {"contract", "paths", "cache", "device", "compat"},
    {"facemodel"},
    {"render"},  # renderers of the head and of any mesh
    {"track"},  # the tracking front end: video, mediapipe, crop, filters, head pose, correspondence
    {"expression"},
    {"synth"},
    {"capture"},
    {"retarget"},
    {"shapekeys"},
    {"tune"},  # the animator's controls on a kept result (numpy only: the add-on runs them)
    {"engine", "preview"},
    {"worker", "distributed"},
    {"eval"},
    {"bench"},
    {"cli", "__main__"},
]
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_imports(path: Path) -> set[str]:
    """Every serep_engine module `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("serep_engine.")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in ENGINE.rglob("*.py") if path != ENGINE / "__init__.py"}
    # a module's own package is not an edge: Python imports it first anyway
    return {name: {imported for imported in engine_imports(path)
                   if imported in modules and not (name + ".").startswith(imported + ".")}
            for name, path in modules.items()}


def layer(module: str) -> int:
    part = module.split(".")[1]
    assert part in LAYER, f"{module} is in no layer of tests/test_layout.py: place it"
    return LAYER[part]


def test_imports_point_down_the_data_path(graph):
    upward = sorted(f"{module} -> {imported}" for module, imports in graph.items() for imported in imports
                    if layer(imported) > layer(module))
    assert not upward, "imports of a later stage:\n" + "\n".join(upward)


def test_no_import_circle(graph):
    state: dict[str, str] = {}

    def visit(module: str, chain: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                path = chain + [module]
                pytest.fail("import circle: " + " -> ".join(path[path.index(imported):] + [imported]))
            if imported not in state:
                visit(imported, chain + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_both_sides_of_the_process_boundary_use_the_contract_module(graph):
    assert "serep_engine.contract" in graph["serep_engine.worker"]
    addon_sources = [path.read_text() for path in (REPO / "serep_blender").glob("*.py")]
    assert any('_import_engine_module("serep_engine.contract")' in text for text in addon_sources)
    contract_imports = set().union(*(graph[m] for m in graph if m.startswith("serep_engine.contract")))
    assert contract_imports <= {m for m in graph if m.split(".")[1] in LAYERS[0]}, contract_imports


HEAVY = ("torch", "cv2", "mediapipe", "scipy", "trimesh", "moderngl", "serep_engine.engine",
         "serep_engine.worker", "serep_engine.capture", "serep_engine.track", "serep_engine.facemodel")
# numpy only: the add-on's re-bake (serep_engine.tune) fills gaps and smooths with the engine's own filters
LIGHT = ("serep_engine.track", "serep_engine.track.filters")


@pytest.mark.blender
def test_the_addon_loads_the_contract_and_nothing_heavy():
    """In real Blender (the bpy module), a fresh process: importing and registering the add-on brings in the
    engine's contract module and none of the engine's heavy dependencies."""
    script = textwrap.dedent(f"""
        import sys
        import bpy
        sys.path.insert(0, {str(REPO)!r})
        import serep_blender
        serep_blender.register()
        heavy = sorted(name for name in sys.modules if name not in {LIGHT!r} and (name.split(".")[0] in {HEAVY!r}
                       or any(name == h or name.startswith(h + ".") for h in {HEAVY!r})))
        print("HEAVY", heavy)
        print("CONTRACT", "serep_engine.contract" in sys.modules and "serep_engine.tune" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout and "CONTRACT True" in done.stdout, done.stdout[-2000:]
