"""Every room of src/controlnet imports only downward, and no modules import each other.

The layer order (top first; README.md, Development, says the same). A module may import modules of its
own layer or of a lower one, never of a higher one; imports inside functions count too. Within and
across layers the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [
    ("controlnet.__main__", "controlnet.cli"),  # the commands: parse and call
    ("controlnet.web",),  # the server (`controlnet serve` starts it)
    ("controlnet.evaluation",),
    ("controlnet.mini",),  # builds and trains the built-in models
    ("controlnet.training",),
    ("controlnet.metrics",),  # metric definitions, shared by training and evaluation
    ("controlnet.world",),
    ("controlnet.generation",),  # `controlnet generate`'s work: a job -> pictures -> PNGs with parameters
    ("controlnet.parameters", "controlnet.recommended", "controlnet.tiny"),  # PNG parameters, recommended settings, random test models
    ("controlnet.pipeline",),
    ("controlnet.checkpoints",),
    ("controlnet.nn", "controlnet.annotators"),
    ("controlnet",),  # base modules: errors, checks, files, images, assets, devices, dtypes, ...
]


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict) -> str:
    """The module a dotted name lives in (`controlnet.pipeline.ControlUnit` -> `controlnet.pipeline`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str, path: Path, modules: dict) -> set[str]:
    """The project modules that `name` imports anywhere in its file (module level or in functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {_known(a.name, modules) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(prefix + ([node.module] if node.module else []))
            found |= {_known(f"{base}.{a.name}", modules) or _known(base, modules) for a in node.names}
    return {m for m in found if m and m != name}


def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer(module: str) -> int:
    """Index in LAYERS of the longest prefix that names the module's room (higher = lower layer)."""
    best, index = -1, None
    for i, rooms in enumerate(LAYERS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and len(room) > best:
                best, index = len(room), i
    assert index is not None, f"{module} is in no layer; add its room to LAYERS"
    return index


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    for name in module_files():
        layer(name)


def test_no_upward_import():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in sorted(graph().items()) for b in sorted(targets) if layer(b) < layer(a)]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checks_see_what_they_should(tmp_path):
    """The checker itself: a lazy import inside a function counts, relative imports resolve, and a
    two-module cycle is found."""
    modules = {"controlnet.cli.a": tmp_path / "a.py", "controlnet.pipeline.b": tmp_path / "b.py", "controlnet.pipeline": None}
    modules["controlnet.cli.a"].write_text("def f():\n    from controlnet.pipeline import b\n")
    modules["controlnet.pipeline.b"].write_text("from .. import cli\nimport controlnet.pipeline.b\n")
    assert imports_of("controlnet.cli.a", modules["controlnet.cli.a"], modules) == {"controlnet.pipeline.b"}
    assert cycles({"x": {"y"}, "y": {"x"}, "z": {"x"}}) == [["x", "y"]]
    assert layer("controlnet.cli.generate") < layer("controlnet.parameters") < layer("controlnet.pipeline.units")
    assert layer("controlnet.errors") == len(LAYERS) - 1


def _samples(module: str) -> bool:
    """The module is the sampler's room (`controlnet.pipeline`: ControlPipeline, ControlUnit, images, ...)."""
    return module == "controlnet.pipeline" or module.startswith("controlnet.pipeline.")


def test_the_commands_only_parse_and_call():
    """No command module reaches the sampler itself: `generate`'s work is in controlnet.generation,
    `demo`'s in controlnet.mini.demo, and the commands call those."""
    edges = graph()
    commands = [m for m in edges if layer(m) == 0]
    sampling = {m: sorted(filter(_samples, edges[m])) for m in commands if any(map(_samples, edges[m]))}
    assert not sampling, f"command modules that sample instead of calling: {sampling}"
    # not vacuous: the commands are seen, call the modules that sample, and those do reach the pipeline
    assert {"controlnet.cli.generate", "controlnet.cli.demo"} <= set(commands)
    assert "controlnet.generation" in edges["controlnet.cli.generate"]
    assert "controlnet.mini.demo" in edges["controlnet.cli.demo"]
    assert any(map(_samples, edges["controlnet.generation"])) and any(map(_samples, edges["controlnet.mini.demo"]))
