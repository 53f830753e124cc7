"""A model is resolved once: a preset and the --llava/--stan overrides become one `ModelSpec`
(`stanchat.pretrained.resolve`) listing every path and what is missing; `stanchat.fetch.ensure` fills
the missing parts once per command, and `stanchat.chat.load` reads the spec.

Offline, on a hub cache the test writes itself (the `hub` and `parts` fixtures of tests/test_fetch.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import stanchat.chat as chat
import stanchat.fetch as fetch
import stanchat.pretrained as pretrained
from stanchat.cli import main
from stanchat.errors import WeightsError
from tests.test_fetch import FILE, REPO, ask, hub, parts  # noqa: F401  (hub, parts: fixtures)

PRESET = "llava-1.5-7b"
MODULES = (pretrained, fetch, chat)  # every module that may hold a name of the resolve/fetch path


def spy(monkeypatch, name: str) -> list:
    """The calls of `name` from now on, wherever one of MODULES binds it (a module that imported it too)."""
    calls, original = [], next(getattr(m, name) for m in MODULES if hasattr(m, name))

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    for module in MODULES:
        if getattr(module, name, None) is original:
            monkeypatch.setattr(module, name, counted)
    return calls


def test_one_ask_resolves_the_spec_once_and_ensures_once(hub, parts, capsys, monkeypatch):
    """Before: `ask` ran `fetch.ensure` twice (the command, then `chat.load`) and `pretrained.resolve`
    worked the paths out a third time. Now: one resolve, one ensure, one registry lookup per `ask`;
    the first fetches the STAN, the second finds nothing missing and fetches nothing."""
    hub.add()
    resolves, ensures, lookups, steps = (spy(monkeypatch, name) for name in
                                         ("resolve", "ensure", "get_preset", "ensure_stan"))
    for fetched in (1, 0):
        assert main(ask(parts)) == 0
        assert json.loads(capsys.readouterr().out)["preset"] == PRESET
        assert (len(resolves), len(ensures), len(lookups), len(steps)) == (1, 1, 1, fetched)
        for calls in (resolves, ensures, lookups, steps):
            calls.clear()


def test_pull_and_models_read_the_same_spec(hub, capsys, monkeypatch):
    """`stanchat pull` resolves its preset once (the name checked there, before any download) and
    fetches every part of that spec; `stanchat models` lists what the spec says is missing."""
    hub.add()
    resolves, lookups = spy(monkeypatch, "resolve"), spy(monkeypatch, "get_preset")
    assert main(["pull", PRESET]) == 0
    assert (len(resolves), len(lookups)) == (1, 1) and "ready:" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    entries = {e["preset"]: e for e in map(json.loads, capsys.readouterr().out.splitlines())}
    assert len(resolves) == 1 + len(pretrained.PRESETS)
    for name, entry in entries.items():
        spec = pretrained.resolve(name)
        assert (entry["stan_present"], entry["llava_present"]) == ("stan" not in spec.missing,
                                                                   "llava" not in spec.missing), name
        assert entry["stan_dir"] == str(spec.stan)
    assert entries[PRESET]["stan_present"] and entries[PRESET]["llava_present"]


def test_load_resolves_and_fetches_a_preset_name_itself_and_takes_a_resolved_spec(hub, monkeypatch):
    """From Python, `stanchat.load(name)` resolves and fetches what is missing by itself; given a spec
    already resolved and fetched, it neither resolves nor fetches again."""
    hub.add()
    assert pretrained.resolve(PRESET).missing == ("stan",)
    first = chat.load(PRESET, device="cpu")
    assert first.preset == PRESET and pretrained.stan_is_converted(hub.home / "mug-stan-l14")
    spec = fetch.ensure(pretrained.resolve(PRESET))
    resolves, ensures = spy(monkeypatch, "resolve"), spy(monkeypatch, "ensure")
    again = chat.load(spec, device="cpu")
    assert (again.name, again.preset, resolves, ensures) == (PRESET, PRESET, [], [])
    with pytest.raises(TypeError, match="resolve"):
        chat.load(spec, stan=str(spec.stan))


def test_a_spec_lists_its_paths_sources_and_what_is_missing(hub, parts):
    """Missing parts are listed, not raised; `require()` raises the one line naming how to get them;
    overrides take their part away from the preset; a pinned revision makes another one missing."""
    empty = pretrained.resolve(PRESET)
    assert (empty.parts, empty.missing, empty.preset, empty.revision) == (("stan", "llava"),) * 2 + (PRESET, None)
    assert (empty.llava, empty.stan) == ("llava-hf/llava-1.5-7b-hf", hub.home / "mug-stan-l14")
    with pytest.raises(WeightsError, match=f"hf download {REPO} {FILE}"):
        empty.require()
    own = pretrained.resolve(PRESET, llava=str(parts["llava"]))
    assert (own.parts, own.missing, own.preset) == (("stan",), ("stan",), PRESET)
    hub.add()
    fetch.pull(PRESET)
    assert pretrained.resolve(PRESET).require().missing == ()
    pinned = pretrained.resolve(PRESET, revision="v2")
    assert pinned.missing == ("stan",)
    with pytest.raises(WeightsError, match="converted from revision 'main', not 'v2'"):
        pinned.require()
    both = pretrained.resolve(llava=str(parts["llava"]), stan=str(hub.home / "mug-stan-l14"))
    assert (both.parts, both.missing, both.preset, both.source) == ((), (), None, None)
    assert fetch.ensure(both) == both
    assert pretrained.resolve("tiny", revision="v2").missing == ()  # a bundled STAN has no hub revision


def test_the_registry_never_imports_fetch():
    """Data flows one way: fetch.py imports pretrained.py, never the reverse."""
    code = "import sys, stanchat.pretrained; print('stanchat.fetch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
