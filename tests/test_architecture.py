"""The layout of ARCHITECTURE.md, checked: the import rules it states hold, and every module is listed there.

Reads the sources with ``ast`` (nothing is imported), so it takes well under a second. Every rule is a function of
the modules found under a root, so the last tests run the same checks on a small package written to a temporary
folder: each rule must catch the import that breaks it (the checker cannot pass by finding nothing).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recsys"

# The foundations every module may import; they import nothing of recsys but each other (recsys.choices: the tables of
# names a user chooses among; recsys.guard: the one write guard; recsys.library.uri: the one file:// rule;
# recsys.library.remote: a track's bytes, from a local file or a server; all standard library only).
FOUNDATIONS = ("recsys.errors", "recsys.atomic", "recsys.guard", "recsys.choices", "recsys.library.uri",
               "recsys.library.remote")
# The allowed direction between packages: each package (or top-level module) of recsys and the recsys packages it may
# import besides itself and the foundations, at any depth (inside functions too). Every module belongs to one of them.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "recsys.home": (),
    "recsys.config": ("recsys.home",),
    "recsys.tracking": ("recsys.home",),
    # the MPD and Subsonic sources read through the server clients (which import only recsys.errors)
    "recsys.library": ("recsys.config", "recsys.servers.mpd", "recsys.servers.subsonic"),
    "recsys.servers": ("recsys.config",),
    # decoding and training get their settings as sections (embedder.decoding.AudioSection,
    # training.trainer.TrainSection)
    "recsys.embedder": ("recsys.library", "recsys.home"),
    "recsys.index": ("recsys.library", "recsys.config", "recsys.home"),
    "recsys.training": ("recsys.embedder", "recsys.library", "recsys.home"),
    # the ranking gets its settings as a typed section (recommender.rank.RankSettings), built by the use cases
    "recsys.recommender": ("recsys.library", "recsys.tracking"),
    # the writers take a neutral entry (playlists.output.PlaylistEntry), not the recommender's RankedTrack
    "recsys.playlists": ("recsys.library",),
    "recsys.pipeline": ("recsys.library", "recsys.embedder", "recsys.index", "recsys.config", "recsys.home"),
    "recsys.player": (),
    "recsys.viz": (),
    "recsys.synth": (),
    "recsys.app": ("recsys.pipeline", "recsys.library", "recsys.embedder", "recsys.training", "recsys.index",
                   "recsys.recommender", "recsys.playlists", "recsys.servers", "recsys.config", "recsys.home",
                   "recsys.tracking", "recsys.player", "recsys.viz", "recsys.synth"),
    "recsys.cli": ("recsys.app", "recsys.config"),
}
# What a front end (recsys.cli, and beetsplug.recsys outside the package) may import of recsys.
CLI_ALLOWED = ("recsys.app", "recsys.config", "recsys.choices", "recsys.errors")
# Parts of an allowed package that the modules under a prefix must still not import: the player databases are read by
# the use cases only (the ranking and the playlist files get tracks, never a source); the readers of the player
# databases get their settings section from the registry (recsys.library.sources itself), never the settings.
NEVER: dict[str, tuple[str, ...]] = {
    "recsys.recommender": ("recsys.library.sources",),
    "recsys.playlists": ("recsys.library.sources",),
    "recsys.servers": ("recsys.library.sources",),
    "recsys.library.sources.": ("recsys.config",),
}
# The modules of recsys.app that are not use cases but what several use cases share; every other module of recsys.app
# is one command's use case, and imports no other use case. A helper imports no use case.
APP_HELPERS = ("recsys.app.settings", "recsys.app.output", "recsys.app.taste", "recsys.app.ranking",
               "recsys.app.encoder_scores")
# `recsys demo` runs the other commands end to end, as a user would: the one use case that may call the others.
RUNS_USE_CASES = ("recsys.app.demo",)
# Stage-1 training of the encoder: inference (embedding, the encoders, the active-encoder choice) never imports it, and
# of the use cases only `recsys train-encoder` does.
TRAINING = ("recsys.training",)
TRAINING_USERS = ("recsys.app.train_encoder",)
# Modules that must not import torch (nor lancedb, but for the store) when imported: `recsys similar`, `playlist`,
# `radio`, `path`, `map` and `status` start fast, and run without a model.
NO_TORCH_AT_IMPORT = ("recsys.library", "recsys.index", "recsys.recommender", "recsys.playlists", "recsys.home",
                      "recsys.config", "recsys.cli", "recsys.tracking", "recsys.player", "recsys.viz",
                      "recsys.pipeline", "recsys.app.similar", "recsys.app.playlist", "recsys.app.ranking",
                      "recsys.app.taste", "recsys.app.train_classifier", "recsys.app.settings", "recsys.app.radio",
                      "recsys.app.path", "recsys.app.map", "recsys.app.output", "recsys.app.status",
                      "recsys.app.embed", "recsys.app.maintenance", "recsys.servers", "recsys.app.mpd")
TORCH_MODULES = ("torch", "torchaudio", "recsys.embedder.interface", "recsys.embedder.encoders",
                 "recsys.embedder.musicnn", "recsys.embedder.features", "recsys.embedder.onnx_cpu", "onnxruntime",
                 "onnx", "ray", "lance_ray", *TRAINING)  # ray: the
# `--engine ray` path only (recsys.pipeline.ray_engine imports it inside its functions)
LANCEDB_USERS = ("recsys.index.store",)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package ``recsys`` under ``root``, by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted((root / "recsys").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file; relative imports resolved. ``top_level_only``: only
    those that run when the module is imported (not inside a function, nor under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base.startswith("recsys") else base)
                      for alias in node.names]
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


def _within_any(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(_within(name, p) for p in prefixes)


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``recsys.a.b.func`` -> ``recsys.a.b``), None when it is not ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> str | None:
    return next((p for p in (*FOUNDATIONS, *MAY_IMPORT) if _within(module, p)), None)


def _graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {recsys module it imports (at any depth): the first line doing so}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for line, name in _imports(module, path):
            target = _target(name, modules) if _within(name, "recsys") else None
            if target is not None and target != module and target != "recsys":
                edges.setdefault(target, line)
    return graph


def _where(modules: dict[str, Path], module: str, line: int, root: Path) -> str:
    return f"{modules[module].relative_to(root)}:{line}"


def direction_violations(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Imports against the allowed direction between packages (MAY_IMPORT, NEVER, FOUNDATIONS)."""
    broken = []
    for module, edges in _graph(modules).items():
        if module == "recsys":
            continue
        layer = _layer(module)
        if layer is None:
            broken.append(f"{modules[module].relative_to(root)}: {module} belongs to no package of the import rules: "
                          "add it to MAY_IMPORT and ARCHITECTURE.md")
            continue
        allowed = FOUNDATIONS if layer in FOUNDATIONS else (layer, *FOUNDATIONS, *MAY_IMPORT[layer])
        never = [(prefix.rstrip("."), banned) for prefix, banned in NEVER.items() if _within(module, prefix)]
        for target, line in edges.items():
            who = next((prefix for prefix, banned in never if _within_any(target, banned)), None)
            if who or not _within_any(target, allowed):
                broken.append(f"{_where(modules, module, line, root)} imports {target}, which {who or layer} must "
                              "not")
    return broken


def use_case_violations(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """A use case (a module of recsys.app but the helpers) importing another use case, or a helper importing one."""
    def is_use_case(m: str) -> bool:
        return _within(m, "recsys.app") and m != "recsys.app" and m not in APP_HELPERS

    broken = []
    for module, edges in _graph(modules).items():
        if not _within(module, "recsys.app") or module in RUNS_USE_CASES:
            continue
        for target, line in edges.items():
            if is_use_case(target):
                what = "a helper" if module in APP_HELPERS else "a use case"
                broken.append(f"{_where(modules, module, line, root)} imports the use case {target}: {what} imports "
                              "no use case (move what they share into a helper of recsys.app or a package below)")
    return broken


def training_violations(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Inference (or anything but training itself and `recsys train-encoder`) importing stage-1 training."""
    broken = []
    for module, edges in _graph(modules).items():
        if _within_any(module, TRAINING) or module in TRAINING_USERS:
            continue
        for target, line in edges.items():
            if _within_any(target, TRAINING):
                broken.append(f"{_where(modules, module, line, root)} imports {target}: only training and "
                              f"{', '.join(TRAINING_USERS)} use the encoder's training")
    return broken


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import cycles of ``graph``: every strongly connected set of two or more modules, sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


# Cycles that came with the Subsonic source, known and to be broken (ARCHITECTURE.md says how); any other cycle, or
# one of these growing, fails. Remove an entry when its cycle is gone (the test says so).
KNOWN_CYCLES: tuple[tuple[str, ...], ...] = ()  # none: every cycle fails


def cycle_violations(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Import cycles between modules, counting every import (inside functions and under TYPE_CHECKING too), but the
    KNOWN_CYCLES; a known cycle that no longer exists is reported too, so the list cannot go stale."""
    graph = _graph(modules)
    found = cycles(graph)
    broken = [f"import cycle: {' <-> '.join(c)} ("
              + ", ".join(f"{_where(modules, a, graph[a][b], root)} -> {b}" for a in c for b in c if b in graph[a])
              + ")" for c in found if tuple(c) not in KNOWN_CYCLES]
    if root == ROOT:
        broken += [f"the known cycle {' <-> '.join(k)} is gone: remove it from KNOWN_CYCLES"
                   for k in KNOWN_CYCLES if list(k) not in found]
    return broken


def fast_path_violations(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """torch (or what imports it) on the fast paths at module level; lancedb anywhere but the store."""
    broken = []
    for module, path in modules.items():
        fast = _within_any(module, NO_TORCH_AT_IMPORT)
        for line, name in _imports(module, path, top_level_only=True):
            if (fast and _within_any(name, TORCH_MODULES)) or (_within(name, "lancedb")
                                                               and module not in LANCEDB_USERS):
                broken.append(f"{path.relative_to(root)}:{line} imports {name} at module level")
    return broken


RULES: tuple[Callable[[dict[str, Path], Path], list[str]], ...] = (
    direction_violations, use_case_violations, training_violations, cycle_violations, fast_path_violations)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_the_import_rules_hold(rule: Callable[[dict[str, Path], Path], list[str]]) -> None:
    """Each rule of ARCHITECTURE.md's "Import rules" on the real package: the direction between packages, no use case
    importing another, inference never importing training, no import cycle, torch and lancedb off the fast paths."""
    broken = rule(_modules(), ROOT)
    assert not broken, "\n".join(broken)


def test_the_beets_plugin_is_a_front_end_like_the_cli() -> None:
    """beetsplug/recsys.py: recsys's use cases only inside its commands (beets imports it on every `beet` command),
    nothing of recsys but what the CLI may use, no __init__.py in beets' namespace package, no item stored."""
    path = ROOT / "beetsplug" / "recsys.py"
    assert not (ROOT / "beetsplug" / "__init__.py").exists()
    every = [name for _, name in _imports("beetsplug.recsys", path) if name.startswith("recsys")]
    assert every and all(any(_within(name, ok) for ok in CLI_ALLOWED) for name in every), every
    top = [name for _, name in _imports("beetsplug.recsys", path, top_level_only=True)]
    assert not [name for name in top if _within(name, "recsys.app") or _within(name, "torch")], top
    assert ".store(" not in path.read_text(encoding="utf-8") and ".write(" not in path.read_text(encoding="utf-8")


def test_one_uri_decoder() -> None:
    """Only recsys/library/uri.py percent-decodes (``urllib.parse.unquote*``): a second decoder is a second rule
    for the track key of a URI."""
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "library" / "uri.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.ImportFrom) and node.module == "urllib.parse"
                     else [node.attr] if isinstance(node, ast.Attribute) and node.attr.startswith("unquote") else [])
            broken += [f"{path.relative_to(ROOT)}:{node.lineno} uses {n}" for n in names if n.startswith("unquote")]
    assert not broken, "decode file:// URIs with recsys.library.uri:\n" + "\n".join(broken)


def test_every_module_is_listed_in_architecture_md() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(recsys/[\w/]+\.py)`", text))
    present = {str(path.relative_to(ROOT)) for path in _modules().values()}
    assert not present - listed, f"modules missing from ARCHITECTURE.md's layout: {sorted(present - listed)}"
    assert not listed - present, f"ARCHITECTURE.md lists modules that do not exist: {sorted(listed - present)}"


def test_architecture_md_states_the_rules_checked_here() -> None:
    """The import rules section names every package of MAY_IMPORT and every helper of recsys.app."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rules = text[text.index("## Import rules"):]
    missing = [name for name in (*MAY_IMPORT, *FOUNDATIONS, *APP_HELPERS, *RUNS_USE_CASES, *TRAINING)
               if f"`{name}`" not in rules]
    assert not missing, f"ARCHITECTURE.md's import rules do not name {missing}"


# ---- the checker itself, on a small package written to tmp_path ------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, source in {"recsys/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return _modules(root)


CLEAN = {
    "recsys/errors.py": "class RecsysError(Exception):\n    pass\n",
    "recsys/library/__init__.py": "",
    "recsys/library/track.py": "from recsys.errors import RecsysError\n",
    "recsys/index/__init__.py": "",
    "recsys/index/store.py": "import lancedb\nfrom recsys.library.track import RecsysError\n",
    "recsys/embedder/__init__.py": "",
    "recsys/embedder/encoders.py": "import torch\n",
    "recsys/training/__init__.py": "",
    "recsys/training/trainer.py": "from recsys.embedder.encoders import torch\n",
    "recsys/pipeline/__init__.py": "",
    "recsys/pipeline/run.py": "def f():\n    import torch\n    from recsys.embedder import encoders\n",
    "recsys/app/__init__.py": "",
    "recsys/app/taste.py": "from recsys.index.store import lancedb\n",
    "recsys/app/playlist.py": "from recsys.app.taste import lancedb\n",
    "recsys/app/train_encoder.py": "from recsys.training.trainer import torch\nfrom recsys.pipeline.run import f\n",
    "recsys/app/demo.py": "def f():\n    from recsys.app.playlist import lancedb\n",
    "recsys/cli.py": "def f():\n    from recsys.app.playlist import lancedb\n",
}


def test_the_checker_passes_a_package_that_keeps_the_rules(tmp_path: Path) -> None:
    modules = _package(tmp_path, CLEAN)
    assert len(modules) == len(CLEAN) + 1
    assert [rule(modules, tmp_path) for rule in RULES] == [[]] * len(RULES)


def test_the_checker_catches_each_broken_rule(tmp_path: Path) -> None:
    """One import against each rule, inside a function where the rule counts every import: each one is reported,
    with its file and line, by its own rule only."""
    broken = {
        "recsys/library/track.py": "from recsys.errors import RecsysError\n\n\ndef f():\n"
                                   "    from recsys.pipeline.run import f\n",  # library -> pipeline
        "recsys/index/store.py": "import lancedb\nfrom recsys.library.track import RecsysError\n",
        "recsys/app/playlist.py": "def f():\n    from recsys.app.train_encoder import torch\n",  # use case -> use case
        "recsys/embedder/encoders.py": "import torch\n\n\ndef f():\n    from recsys.training import trainer\n",
        "recsys/app/evaluate.py": "from recsys.training.trainer import torch\n",  # training in another use case
        "recsys/index/lookup.py": "import torch\n",  # torch on a fast path, at module level
        "recsys/config.py": "from recsys.errors import RecsysError\n",
        "recsys/embedder/audio.py": "from recsys.config import RecsysError\n",  # decoding takes its section
        "recsys/recommender/__init__.py": "",
        "recsys/recommender/rank.py": "from recsys.config import RecsysError\n",  # settings, not its section
        "recsys/playlists/__init__.py": "",
        "recsys/playlists/xspf.py": "def f():\n    from recsys.recommender.rank import RecsysError\n",  # a writer
        "recsys/library/sources/__init__.py": "from recsys.config import RecsysError\n",  # the registry may
        "recsys/library/sources/mpd.py": "def f():\n    from recsys.config import RecsysError\n",  # a reader not
    }
    modules = _package(tmp_path, {**CLEAN, **broken})
    found = {rule.__name__: rule(modules, tmp_path) for rule in RULES}
    assert found["direction_violations"] == [
        "recsys/embedder/audio.py:1 imports recsys.config, which recsys.embedder must not",
        "recsys/embedder/encoders.py:5 imports recsys.training.trainer, which recsys.embedder must not",
        "recsys/library/sources/mpd.py:2 imports recsys.config, which recsys.library.sources must not",
        "recsys/library/track.py:5 imports recsys.pipeline.run, which recsys.library must not",
        "recsys/playlists/xspf.py:2 imports recsys.recommender.rank, which recsys.playlists must not",
        "recsys/recommender/rank.py:1 imports recsys.config, which recsys.recommender must not"]
    assert found["use_case_violations"] == [
        "recsys/app/playlist.py:2 imports the use case recsys.app.train_encoder: a use case imports no use case (move "
        "what they share into a helper of recsys.app or a package below)"]
    assert found["training_violations"] == [
        "recsys/app/evaluate.py:1 imports recsys.training.trainer: only training and recsys.app.train_encoder use "
        "the encoder's training",
        "recsys/embedder/encoders.py:5 imports recsys.training.trainer: only training and recsys.app.train_encoder "
        "use the encoder's training"]
    # encoders -> trainer (in a function) and trainer -> encoders (module level) make a cycle
    assert found["cycle_violations"] == [
        "import cycle: recsys.embedder.encoders <-> recsys.training.trainer (recsys/embedder/encoders.py:5 -> "
        "recsys.training.trainer, recsys/training/trainer.py:1 -> recsys.embedder.encoders)"]
    assert found["fast_path_violations"] == ["recsys/index/lookup.py:1 imports torch at module level"]


def test_the_checker_catches_a_module_outside_the_layers_and_lancedb_elsewhere(tmp_path: Path) -> None:
    modules = _package(tmp_path, {**CLEAN, "recsys/newpkg/__init__.py": "", "recsys/app/map.py": "import lancedb\n"})
    assert direction_violations(modules, tmp_path) == [
        "recsys/newpkg/__init__.py: recsys.newpkg belongs to no package of the import rules: add it to MAY_IMPORT "
        "and ARCHITECTURE.md"]
    assert fast_path_violations(modules, tmp_path) == ["recsys/app/map.py:1 imports lancedb at module level"]


def test_a_cycle_of_three_is_one_cycle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"e": 1}}
    assert cycles(graph) == [["a", "b", "c"]]
