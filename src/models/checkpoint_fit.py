"""Why a checkpoint does not fit a model: the keys, shapes and config values that differ."""

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
from torch import nn

from src.models.resnet import resolved_args

# Network arguments renamed since a checkpoint may have been written: its name then -> today's.
RENAMED_NET_ARGS = {"depths": "depth"}  # blocks per stage; `depth` takes the same list


def upgrade_hparams(hparams: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A checkpoint's hyperparameters in today's argument names (in place), so older checkpoints still load."""
    net = hparams.get("net")
    init_args = net.get("init_args") if isinstance(net, Mapping) else None
    if isinstance(init_args, MutableMapping):
        for old, new in RENAMED_NET_ARGS.items():
            if old in init_args and new not in init_args:
                init_args[new] = init_args.pop(old)
    return hparams


def resolved_net(net: Any) -> Any:
    """A ``{class_path, init_args}`` network config with ResNet's rules applied (``resolved_args``)."""
    if hasattr(net, "as_dict"):
        net = net.as_dict()
    if not isinstance(net, Mapping) or not str(net.get("class_path", "")).endswith("resnet.ResNet"):
        return net
    return {**net, "init_args": resolved_args(dict(net.get("init_args") or {}))}


def check_checkpoint_fits(
    module: nn.Module, checkpoint: Mapping[str, Any], source: str = "the checkpoint", allow_net_change: bool = False
) -> None:
    """Raise a ValueError naming the mismatched parameters and config values when the weights don't fit.

    Called before the state dict is loaded. Two cases: the tensors differ (keys, shapes), which no
    load survives; or every tensor fits but the network's arguments differ (another ``unit`` or
    ``shortcut`` has the same shapes), which would silently train another network than the run's:
    refused unless ``allow_net_change`` (fine-tuning into a changed network on purpose).
    """
    if isinstance(checkpoint.get("hyper_parameters"), MutableMapping):
        upgrade_hparams(checkpoint["hyper_parameters"])
    saved: Mapping[str, Any] = checkpoint.get("state_dict", {})
    expected = module.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [
        f"{k}: checkpoint {list(saved[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape
    ]
    old, new = (
        resolved_hparams(checkpoint.get("hyper_parameters", {})),
        resolved_hparams(getattr(module, "hparams", {})),
    )
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    net_changed = [k for k in differ if k.startswith("net.") and k in old]  # old checkpoints may lack some keys
    if not (missing or unexpected or shapes) and (allow_net_change or not net_changed):
        return
    if missing or unexpected or shapes:
        lines = [f"{source} does not fit the model: its architecture differs from the current config."]
    else:
        lines = [f"{source} holds another network than the config: the same tensor shapes, other arguments."]
    changed = [f"model.{k}: {old.get(k, '<unset>')} in checkpoint, {new.get(k, '<unset>')} now" for k in differ]
    for title, items in (
        ("config values that differ", changed),
        ("shape mismatches", shapes),
        ("missing in checkpoint", missing),
        ("unexpected in checkpoint", unexpected),
    ):
        if items:
            shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
            lines.append(f"{title} ({len(items)}):\n  " + "\n  ".join(shown))
    lines.append("Resume with the config the run was started with, or start a new run directory.")
    if not (missing or unexpected or shapes):
        lines.append("To load these weights into the changed network on purpose: --allow_net_change true")
    raise ValueError("\n".join(lines))


def resolved_hparams(hparams: Any) -> dict[str, str]:
    """Flattened hyperparameters, the network's arguments resolved (two spellings of one net are equal)."""
    if hasattr(hparams, "as_dict"):
        hparams = hparams.as_dict()
    hparams = dict(hparams)
    if "net" in hparams:
        hparams["net"] = resolved_net(hparams["net"])
    return flatten(hparams)


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested hparams (dicts, jsonargparse Namespaces) as ``{"net.init_args.widths": "[16, 32]"}``."""
    if hasattr(tree, "as_dict"):
        tree = tree.as_dict()
    if not isinstance(tree, Mapping):
        return {prefix.rstrip("."): str(list(tree) if isinstance(tree, tuple) else tree)}
    out: dict[str, str] = {}
    for key, value in tree.items():
        if not str(key).startswith("_"):  # _instantiator, _class_path: bookkeeping of the CLI
            out.update(flatten(value, f"{prefix}{key}."))
    return out


def net_differences(saved_hparams: Mapping[str, Any], net_config: Any) -> list[str]:
    """``model.net`` arguments a checkpoint's hyperparameters and a parsed config disagree on.

    Only arguments the config states count: values it leaves to links (``num_classes``,
    ``in_channels``, set from the DataModule later) are not known yet.
    """
    saved = flatten(resolved_net(upgrade_hparams(dict(saved_hparams)).get("net", {})))
    now = flatten(resolved_net(net_config))
    return [
        f"model.net.{k}: {saved[k]} in the checkpoint, {now[k]} in the config"
        for k in sorted(saved)
        if now.get(k, "None") not in ("None", saved[k])
    ]
