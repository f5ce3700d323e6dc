"""Every exception class the project defines is in the one tree, documented in one place
(issue 15, item 5): :mod:`alerts_schema.errors` draws it, ``docs/errors.md`` says what a
caller does about each."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import alerts_schema.errors
from alerts_schema.errors import MMBrokerError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("alerts_schema", "listeners", "crossmatch", "broker")
SKIPPED = ("broker.archive.migrations.",)
"""Alembic's scripts run only inside Alembic (``env.py`` needs its context); they define
no exception."""


def project_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of :data:`PACKAGES`, by dotted name."""
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        names = [package] + [m.name for m in pkgutil.walk_packages(
            [str(ROOT / package)], prefix=f"{package}.")]
        for name in names:
            if name.startswith(SKIPPED):
                continue
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == name:
                    found[f"{name}.{cls.__qualname__}"] = cls
    return found


def test_every_exception_class_derives_from_the_root() -> None:
    found = project_exceptions()
    assert "listeners.vtp_protocol.FrameTooLarge" in found  # the walk reaches the modules
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, MMBrokerError))
    assert outside == []


def test_every_public_exception_is_drawn_in_the_tree_and_documented() -> None:
    tree = alerts_schema.errors.__doc__ or ""
    docs = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    public = sorted({cls.__name__ for cls in project_exceptions().values()
                     if not cls.__name__.startswith("_")})
    assert [n for n in public if n not in tree] == []
    assert [n for n in public if f"`{n}`" not in docs] == []
