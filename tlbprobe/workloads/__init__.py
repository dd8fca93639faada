"""The workloads: which there are, what each is (its spec), and its driver when a collect runs it.

Built-in workloads are the subpackages of this package that have a ``spec`` module
(tlbprobe/workloads/<folder>/spec.py, whose ``SPEC`` is a WorkloadSpec), found by scanning
the package: no list of names is kept anywhere. Workloads of other packages come through
the entry-point group ``tlbprobe.workloads`` (importlib.metadata, the way pytest finds
its plug-ins): an entry point, named like the workload, loads to its WorkloadSpec, e.g.
in that package's pyproject.toml::

    [project.entry-points."tlbprobe.workloads"]
    my-trigger = "my_trigger.spec:SPEC"

tests/data/plugin_example/ is such a package, the smallest one.

Specs are pure and imported on the first call here; a driver only when :func:`driver`
asks for it, so the report and `tlbprobe model` never import one.

When one does not load: a built-in workload whose spec or driver cannot be imported is a
bug in tlbprobe, one InternalError line naming it. A plug-in that cannot be loaded (it
raises on import, its entry point is not a WorkloadSpec, its name is taken) is skipped:
each command says so in one warning line on stderr and goes on, so a broken third-party
package cannot stop, say, the report of a collapse run; naming it (--workload, a run of
it) is one error line with the same reason. A plug-in whose driver fails to import is
one error line when it is run.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
from typing import Dict, List, Optional, Type

from ..errors import InputError, InternalError
from ..options import Option
from .base import PhaseOutcome, Workload
from .spec import ReportFigure, WorkloadSpec

#: the entry-point group of workloads from other packages
ENTRY_POINT_GROUP = "tlbprobe.workloads"
#: what a workload's name (and an alias) may look like: it is a job value, part of a run
#: directory's default name and of --help
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

#: name -> spec, in listing order: filled on first use (a test may put its own in)
_SPECS: Optional[Dict[str, WorkloadSpec]] = None
#: name -> where a plug-in came from (its entry point and distribution)
_PLUGINS: Dict[str, str] = {}
#: name -> why that plug-in was skipped
_BROKEN: Dict[str, str] = {}
#: the drivers imported so far (a test may put its own in)
DRIVERS: Dict[str, Type[Workload]] = {}


def registry() -> Dict[str, WorkloadSpec]:
    """Every workload's spec by name, in listing order: found on the first call. The dict
    itself, so a test can add a workload with monkeypatch.setitem."""
    global _SPECS
    if _SPECS is None:
        _SPECS = _discover()
    return _SPECS


def names() -> List[str]:
    """The workloads' names, in listing order (built-ins first)."""
    return list(registry())


def all_specs() -> List[WorkloadSpec]:
    """Every workload's spec, in listing order."""
    return list(registry().values())


def spec(name: str) -> WorkloadSpec:
    """A workload's spec by its name or an alias; InputError naming the choices (or why a
    plug-in of that name was skipped)."""
    specs = registry()
    if name in specs:
        return specs[name]
    for s in specs.values():
        if name in s.aliases:
            return s
    if name in _BROKEN:
        raise InputError(_BROKEN[name])
    raise InputError(f"unknown workload {name!r}: choose one of {', '.join(specs)}")


def broken() -> Dict[str, str]:
    """The plug-ins that were skipped, by entry-point name, with why (one line each)."""
    registry()
    return dict(_BROKEN)


def default_name() -> str:
    """The workload collect runs when none is named (the built-in spec marked default)."""
    for s in registry().values():
        if s.default:
            return s.name
    raise InternalError("no built-in workload is marked default")


def all_options() -> Dict[str, List[str]]:
    """Option key -> the workloads that declare it, in listing order."""
    out: Dict[str, List[str]] = {}
    for s in registry().values():
        for opt in s.options:
            out.setdefault(opt.key, []).append(s.name)
    return out


def driver(name: str) -> Type[Workload]:
    """The driver class of a workload, imported on first use."""
    s = spec(name)
    if s.name in DRIVERS:
        return DRIVERS[s.name]
    error = InputError if s.name in _PLUGINS else InternalError
    module, _, attr = s.driver.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except Exception as e:  # ImportError, or whatever the module raises as it loads
        where = f" (plug-in {_PLUGINS[s.name]})" if s.name in _PLUGINS else ""
        raise error(f"workload {s.name!r}: its driver {s.driver}{where} cannot be imported ({_why(e)})") from None
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise error(f"workload {s.name!r}: its driver {s.driver} is not a subclass of tlbprobe's Workload")
    DRIVERS[s.name] = cls
    return cls


# -- discovery -----------------------------------------------------------------------------

def _discover() -> Dict[str, WorkloadSpec]:
    from importlib.metadata import entry_points  # on first use only: it reads every installed package

    found: Dict[str, WorkloadSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            continue
        where = f"tlbprobe/workloads/{info.name}/spec.py"
        name = f"{__name__}.{info.name}.spec"
        try:
            if importlib.util.find_spec(name) is None:
                continue  # a helper package, not a workload
            s = getattr(importlib.import_module(name), "SPEC", None)
        except Exception as e:
            raise InternalError(f"built-in workload {where} cannot be imported ({_why(e)})") from None
        problem = _problem(s, found)
        if problem:
            raise InternalError(f"built-in workload {where}: {problem}")
        found[s.name] = s
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        where = f"entry point {ep.name} = {ep.value}" + (f" of {dist.name} {dist.version}" if dist else "")
        try:
            s = ep.load()
        except Exception as e:
            _skip(ep.name, f"workload plug-in {ep.name!r} ({where}) cannot be loaded: {_why(e)}")
            continue
        problem = _problem(s, found)
        if not problem and s.name != ep.name:
            problem = f"its entry point is named {ep.name!r}, the spec {s.name!r}: name them alike"
        if not problem and s.default:
            problem = "only a built-in workload can be the default"
        if problem:
            _skip(ep.name, f"workload plug-in {ep.name!r} ({where}): {problem}")
            continue
        found[s.name] = s
        _PLUGINS[s.name] = where
    # listing order: the spec's, then built-ins (by folder) before plug-ins
    return dict(sorted(found.items(), key=lambda kv: kv[1].order))


def _problem(s: object, found: Dict[str, WorkloadSpec]) -> Optional[str]:
    """Why ``s`` cannot be registered beside ``found``, or None."""
    if not isinstance(s, WorkloadSpec):
        return f"its SPEC is {type(s).__name__}, not a tlbprobe.workloads.spec.WorkloadSpec"
    bad = [n for n in (s.name,) + s.aliases if not NAME.match(n)]
    if bad:
        return f"{bad[0]!r} is not a workload name (lower case letters, digits, '-' and '_')"
    taken = {n for other in found.values() for n in (other.name,) + other.aliases}
    clash = [n for n in (s.name,) + s.aliases if n in taken]
    if clash:
        return f"the name {clash[0]!r} is another workload's"
    if ":" not in s.driver:
        return f"driver {s.driver!r} is not 'module:Class'"
    return None


def _skip(name: str, message: str) -> None:
    """A plug-in left out: said once, on stderr, in one line."""
    _BROKEN[name] = message
    print(f"tlbprobe: warning: {message}; skipped", file=sys.stderr)


def _why(e: BaseException) -> str:
    """An exception in one line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


__all__ = ["DRIVERS", "ENTRY_POINT_GROUP", "Option", "PhaseOutcome", "ReportFigure", "Workload", "WorkloadSpec",
           "all_options", "all_specs", "broken", "default_name", "driver", "names", "registry", "spec"]
