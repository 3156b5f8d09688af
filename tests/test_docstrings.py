"""Every public name has a docstring: what ``help()`` and an IDE show a user.

The public API is the names in ``__all__`` of the package, of ``identity`` and of the
legacy adapters (``server``, ``p2phttp``), and the public methods and properties of
those classes, including a hand-written ``__init__``. A method that overrides a
documented method of a base class (``socketserver``, ``http.client``) inherits its
docstring, as ``help()`` shows it; an ``__init__`` needs its own (its arguments differ).
"""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = ["libp2p_stream_sync", "libp2p_stream_sync.identity", "libp2p_stream_sync.server",
           "libp2p_stream_sync.p2phttp"]


def public_names() -> list[tuple[str, object]]:
    names = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                names.append((f"{module_name}.{name}", value))
    return names


def own_members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties the class itself defines (not dataclass-made ones)."""
    members = []
    for name, raw in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if name == "__init__" and raw.__code__.co_filename == "<string>":
            continue  # written by @dataclass: the class docstring describes the fields
        if isinstance(raw, (staticmethod, classmethod, property)) or inspect.isfunction(raw):
            members.append((name, getattr(cls, name) if not isinstance(raw, property) else raw))
    return members


def undocumented() -> list[str]:
    missing = []
    for qualified, value in public_names():
        if not (value.__doc__ or "").strip():
            missing.append(qualified)
        if inspect.isclass(value):
            for name, member in own_members(value):
                doc = member.__doc__ if name == "__init__" else inspect.getdoc(member)
                if not (doc or "").strip():
                    missing.append(f"{qualified}.{name}")
    return missing


def test_the_walk_finds_the_api():
    names = dict(public_names())
    assert "libp2p_stream_sync.Node" in names
    assert "libp2p_stream_sync.server.StreamServer" in names
    members = dict(own_members(names["libp2p_stream_sync.Node"]))
    assert {"__init__", "connected_peers", "addresses_of", "dial", "closed"} <= set(members)
    assert "__init__" in dict(own_members(names["libp2p_stream_sync.server.StreamServer"]))


@pytest.mark.parametrize("name", [
    "libp2p_stream_sync.server.StreamServer.__init__",
    "libp2p_stream_sync.p2phttp.HTTPStreamConnection.__init__",
    "libp2p_stream_sync.Node.connected_peers",
    "libp2p_stream_sync.Node.addresses_of",
])
def test_the_names_the_issue_lists_are_documented(name):
    assert name not in undocumented()


def test_every_public_name_has_a_docstring():
    assert undocumented() == []
