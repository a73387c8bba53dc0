"""Folder users first-class: --library on every command that reads the library, remembered in the home."""

from __future__ import annotations


def test_embed_library_is_remembered_for_status(small_library):
    lib = small_library
    r = lib.run("embed", "--library", str(lib.music), "--encoder", "dsp", "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
