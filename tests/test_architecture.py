"""The layout of ARCHITECTURE.md, checked: the import rules hold, and every module is listed there.

Reads the sources with ``ast`` (nothing is imported), so it takes well under a second.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recsys"

# package -> the recsys packages or modules it must never import (at any level: inside functions too)
FORBIDDEN = {
    "recsys.library": ("recsys.embedder", "recsys.index", "recsys.recommender", "recsys.playlists", "recsys.app",
                       "recsys.home", "recsys.tracking"),
    "recsys.embedder": ("recsys.index", "recsys.recommender", "recsys.playlists", "recsys.app"),
    "recsys.index": ("recsys.embedder", "recsys.recommender", "recsys.playlists", "recsys.app"),
    "recsys.recommender": ("recsys.embedder", "recsys.index", "recsys.playlists", "recsys.app",
                           "recsys.library.sources"),
    "recsys.playlists": ("recsys.embedder", "recsys.index", "recsys.app", "recsys.library.sources"),
    "recsys.home": ("recsys.",),  # the standard library only (besides recsys.errors, allowed below)
    "recsys.player": ("recsys.",),  # recsys.errors only (allowed below)
    "recsys.viz": ("recsys.",),  # recsys.errors, recsys.atomic and recsys.guard only
    "recsys.guard": ("recsys.",),  # recsys.errors only: every layer imports it
    "recsys.servers": ("recsys.embedder", "recsys.index", "recsys.recommender", "recsys.playlists", "recsys.app",
                       "recsys.home", "recsys.library.sources"),
    "recsys.synth": ("recsys.embedder", "recsys.index", "recsys.recommender", "recsys.playlists", "recsys.app",
                     "recsys.library", "recsys.home"),
}
# the foundations every package may use (recsys.library.uri: the one file:// rule, standard library only)
ALLOWED_ANYWAY = {"recsys.errors", "recsys.atomic", "recsys.guard", "recsys.library.uri", "recsys.choices"}
# what recsys.cli may import of recsys: the use cases, the settings (for help texts), the tables of names (for its
# choices) and the error type
CLI_ALLOWED = ("recsys.app", "recsys.config", "recsys.choices", "recsys.errors")
# packages that must not import torch (nor lancedb, but for the store) when imported: `recsys similar`, `recsys
# playlist` and `recsys status` start fast, and run without a model
NO_TORCH_AT_IMPORT = ("recsys.library", "recsys.index", "recsys.recommender", "recsys.playlists", "recsys.home",
                      "recsys.config", "recsys.cli", "recsys.app.similar", "recsys.app.playlist", "recsys.app.taste",
                      "recsys.app.train_classifier", "recsys.app.settings", "recsys.tracking",
                      "recsys.app.radio", "recsys.app.path", "recsys.app.map", "recsys.app.output", "recsys.player",
                      "recsys.viz", "recsys.servers", "recsys.app.mpd")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
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


def test_the_import_rules_hold() -> None:
    broken = []
    for module, path in _modules().items():
        for line, name in _imports(module, path):
            if not name.startswith("recsys") or any(_within(name, ok) for ok in ALLOWED_ANYWAY):
                continue
            if not module.startswith(("recsys.app", "recsys.cli")) and (_within(name, "recsys.app")
                                                                         or _within(name, "recsys.cli")):
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {name}: only recsys.cli and recsys.app "
                              "use the use cases")
            if module == "recsys.cli" and not any(_within(name, ok) for ok in CLI_ALLOWED):
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {name}: the CLI goes through recsys.app")
            for package, forbidden in FORBIDDEN.items():
                if _within(module, package) and any(_within(name, f) for f in forbidden) \
                        and not _within(name, package):
                    broken.append(f"{path.relative_to(ROOT)}:{line} imports {name}, which {package} must not")
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


def test_fast_paths_import_no_torch_at_module_level() -> None:
    broken = []
    for module, path in _modules().items():
        if not any(_within(module, p) for p in NO_TORCH_AT_IMPORT):
            continue
        for line, name in _imports(module, path, top_level_only=True):
            if _within(name, "torch") or _within(name, "torchaudio") or _within(name, "recsys.embedder.encoders") \
                    or _within(name, "recsys.embedder.trainer") or (_within(name, "lancedb")
                                                                     and module != "recsys.index.store"):
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {name} at module level")
    assert not broken, "\n".join(broken)


def test_every_module_is_listed_in_architecture_md() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(recsys/[\w/]+\.py)`", text))
    present = {str(path.relative_to(ROOT)) for path in _modules().values()}
    assert not present - listed, f"modules missing from ARCHITECTURE.md's layout: {sorted(present - listed)}"
    assert not listed - present, f"ARCHITECTURE.md lists modules that do not exist: {sorted(listed - present)}"


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: an import against the rules is seen, at any depth."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recsys.app.embed import embed_library\n", encoding="utf-8")
    assert (3 - 1, "recsys.app.embed.embed_library") in _imports("recsys.library.bad", bad)
    assert _imports("recsys.library.bad", bad, top_level_only=True) == []
