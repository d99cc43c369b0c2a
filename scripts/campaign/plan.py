"""The stages, in the order they run: each is a module of this package with a ``BOX`` and a ``run(ctx)``.
A new stage is one module and its name here."""

import importlib
from types import ModuleType

STAGES = ["env", "smoke", "sync", "throughput", "tta", "repro", "compile", "host", "graphs"]


def stage(name: str) -> ModuleType:
    return importlib.import_module(f"scripts.campaign.{name}")
