import itertools
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from src.data.synthetic import SyntheticDataModule
from src.models.classifier import ImageClassifier, LRFactor
from src.models.resnet import ResNet


def tiny_net(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(depth=[1], widths=[8], stem="cifar", num_classes=num_classes, in_channels=in_channels)


def tiny_data(**kwargs) -> SyntheticDataModule:
    args = dict(num_classes=10, image_size=8, train_size=64, val_size=32, batch_size=8)
    return SyntheticDataModule(**{**args, **kwargs})


def trainer(tmp_path, **kwargs) -> L.Trainer:
    args = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**args, **kwargs})


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_lr_factor_multistep_cosine_and_warmups() -> None:
    step = LRFactor("multistep", total_steps=100, milestones=[10, 20], gamma=0.1)
    assert [step(s) for s in (0, 9, 10, 19, 20, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = LRFactor("cosine", total_steps=100)
    assert (cos(0), cos(50), cos(100)) == pytest.approx((1.0, 0.5, 0.0))
    linear = LRFactor("constant", total_steps=100, warmup_steps=10, warmup_start_factor=0.1)
    assert (linear(0), linear(5), linear(10)) == pytest.approx((0.1, 0.55, 1.0))
    # ResNet-110 (ResNet paper Sec. 4.2): 0.01 = 0.1 x lr 0.1 held for ~400 iterations, then 0.1
    held = LRFactor("multistep", total_steps=64000, milestones=[32000, 48000], warmup_steps=400, warmup_mode="constant")
    assert (held(0), held(399), held(400), held(32000)) == pytest.approx((0.1, 0.1, 1.0, 0.1))


def test_multistep_schedule_with_warmup_through_the_trainer(tmp_path) -> None:
    model = ImageClassifier(
        tiny_net(),
        lr=0.1,
        milestones=[4, 6],
        milestone_unit="step",
        warmup_steps=2,
        warmup_start_factor=0.5,
    )
    rec = RecordLR()
    trainer(tmp_path, max_steps=8, callbacks=[rec], limit_val_batches=0).fit(model, tiny_data())
    assert rec.lrs == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_epoch_milestones_are_converted_to_steps(tmp_path) -> None:
    # 64 images / batch 8 = 8 steps per epoch; milestone at epoch 1 -> step 8
    model = ImageClassifier(tiny_net(), lr=0.1, milestones=[1], milestone_unit="epoch")
    rec = RecordLR()
    trainer(tmp_path, max_epochs=2, callbacks=[rec], limit_val_batches=0).fit(model, tiny_data())
    assert rec.lrs == pytest.approx([0.1] * 8 + [0.01] * 8)


def test_cosine_decays_to_zero_over_the_run(tmp_path) -> None:
    model = ImageClassifier(tiny_net(), lr=0.2, schedule="cosine")
    rec = RecordLR()
    trainer(tmp_path, max_epochs=2, callbacks=[rec], limit_val_batches=0).fit(model, tiny_data())
    expected = [0.1 * (1 + math.cos(math.pi * s / 16)) for s in range(16)]
    assert rec.lrs == pytest.approx(expected)


def test_plateau_cuts_lr_when_val_error_stops_improving(tmp_path) -> None:
    # random labels: validation error cannot keep improving, so patience 0 must cut the lr
    model = ImageClassifier(tiny_net(), lr=0.1, schedule="plateau", plateau_patience=0, gamma=0.5)
    rec = RecordLR()
    trainer(tmp_path, max_epochs=6, callbacks=[rec]).fit(model, tiny_data())
    per_epoch = rec.lrs[::8]
    assert per_epoch[0] == pytest.approx(0.1)
    assert min(per_epoch) < 0.1
    assert all(b <= a for a, b in itertools.pairwise(per_epoch))
    assert all(math.log2(0.1 / lr) == pytest.approx(round(math.log2(0.1 / lr))) for lr in per_epoch)


def test_no_weight_decay_for_bn_and_bias() -> None:
    model = ImageClassifier(tiny_net(), weight_decay=1e-4, no_weight_decay_bn_bias=True)
    decay, no_decay = model.param_groups()
    bn_and_bias = {id(p) for n, p in model.net.named_parameters() if "bn" in n or n.endswith("bias")}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    assert isinstance(model.net, ResNet)  # ImageClassifier keeps the module it was given (types it as nn.Module)
    assert all(p.ndim == 4 or p is model.net.fc.weight for p in decay["params"])
    (single,) = ImageClassifier(tiny_net()).param_groups()
    assert len(single["params"]) == len(list(model.net.parameters()))


def test_metrics_are_logged_in_percent_and_error_is_100_minus_accuracy(tmp_path) -> None:
    model = ImageClassifier(tiny_net())
    data = tiny_data()
    (results,) = trainer(tmp_path).validate(model, data)
    assert set(results) == {"val/loss", "val/acc1", "val/err1", "val/acc5", "val/err5"}
    assert results["val/acc1"] + results["val/err1"] == pytest.approx(100)
    assert results["val/acc5"] >= results["val/acc1"]
    # cross-check top-1 against a direct computation on the same batches
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(-1) == y).sum().item() for x, y in data.val_dataloader())
    assert results["val/acc1"] == pytest.approx(100 * correct / 32, abs=1e-4)


def test_no_top5_with_five_classes_or_fewer(tmp_path) -> None:
    model = ImageClassifier(tiny_net(num_classes=4))
    (results,) = trainer(tmp_path).test(model, tiny_data(num_classes=4))
    assert "test/acc1" in results and "test/acc5" not in results


def test_label_smoothing_changes_training_loss_only(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    net = tiny_net()
    plain, smooth = ImageClassifier(net), ImageClassifier(net, label_smoothing=0.2)
    for m in (plain, smooth):
        monkeypatch.setattr(m, "log", lambda *a, **k: None)  # outside a Trainer there is nothing to log to
    assert smooth._step((x, y), "train") != plain._step((x, y), "train")
    assert smooth._step((x, y), "val") == plain._step((x, y), "val")


def test_predict_step_returns_class_probabilities(tmp_path) -> None:
    preds = trainer(tmp_path).predict(ImageClassifier(tiny_net()), tiny_data())
    assert preds is not None
    batches = [p for p in preds if isinstance(p, torch.Tensor)]
    assert len(batches) == len(preds), "one predict loader gives a flat list of per-batch tensors"
    probs = torch.cat(batches)
    assert probs.shape == (32, 10)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(32))


def test_training_reduces_loss_on_a_learnable_problem(tmp_path) -> None:
    data = tiny_data(train_size=32, val_size=32)
    data.val_set = data.train_set  # memorise 32 images: train error must fall
    model = ImageClassifier(tiny_net(), lr=0.05, schedule="constant")
    t = trainer(tmp_path, max_epochs=30, check_val_every_n_epoch=30)
    (before,) = t.validate(model, data, verbose=False)
    t.fit(model, data)
    assert t.callback_metrics["val/err1"] < before["val/err1"] - 30


def test_adamw_trains_with_decoupled_weight_decay_off_bn_and_bias(tmp_path) -> None:
    data = tiny_data(train_size=32, val_size=32)
    data.val_set = data.train_set
    model = ImageClassifier(
        tiny_net(), optimizer="adamw", lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05, no_weight_decay_bn_bias=True,
        schedule="constant",
    )  # fmt: skip
    t = trainer(tmp_path, max_epochs=30, check_val_every_n_epoch=30)
    (before,) = t.validate(model, data, verbose=False)
    t.fit(model, data)
    (optimizer,) = t.optimizers
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.8, 0.99)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert all(p.ndim <= 1 for p in optimizer.param_groups[1]["params"])
    assert t.callback_metrics["val/err1"] < before["val/err1"] - 30


def test_lamb_is_timms_and_scales_each_decayed_layers_step_to_lr_times_its_norm(tmp_path) -> None:
    """LAMB's layer-wise trust ratio: a weight-decayed tensor moves by exactly lr x its norm per step."""
    from timm.optim import Lamb

    data = tiny_data(train_size=32, val_size=32)
    data.val_set = data.train_set
    model = ImageClassifier(
        tiny_net(), optimizer="lamb", lr=2e-2, weight_decay=0.02, no_weight_decay_bn_bias=True, schedule="constant"
    )
    t = trainer(tmp_path, max_epochs=30, check_val_every_n_epoch=30)
    (before,) = t.validate(model, data, verbose=False)
    t.fit(model, data)
    (optimizer,) = t.optimizers
    assert isinstance(optimizer, Lamb) and [g["weight_decay"] for g in optimizer.param_groups] == [0.02, 0.0]
    assert t.callback_metrics["val/err1"] < before["val/err1"] - 30
    # One more step by hand: every decayed (conv, linear) tensor moves by lr x its own norm.
    decayed = optimizer.param_groups[0]["params"]
    x, y = next(iter(data.train_dataloader()))
    model.train()
    optimizer.zero_grad()
    F.cross_entropy(model.net(x), y).backward()
    old = [p.detach().clone() for p in decayed]
    optimizer.step()
    for p, p0 in zip(decayed, old, strict=True):
        assert float((p.detach() - p0).norm() / p0.norm()) == pytest.approx(2e-2, rel=1e-4)


def _train_step_inputs(
    model: ImageClassifier, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(what the network saw, the loss, the logits) of one training step."""
    seen: list[torch.Tensor] = []
    handle = model.net.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    model.log = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer attached
    loss = model.training_step((x, y), 0)
    handle.remove()
    return seen[0], float(loss), model.net(seen[0]).detach()


def test_mixup_blends_each_batch_with_its_roll_and_trains_on_the_soft_targets() -> None:
    torch.manual_seed(0)
    model = ImageClassifier(tiny_net(), mixup_alpha=0.4).eval()  # eval: the BN statistics stay out of it
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 10
    seen, loss, logits = _train_step_inputs(model, x, y)
    lam = float(((seen - x.roll(1, 0)) / (x - x.roll(1, 0))).median())
    assert 0 <= lam <= 1
    torch.testing.assert_close(seen, lam * x + (1 - lam) * x.roll(1, 0), rtol=1e-4, atol=1e-5)
    soft = lam * F.one_hot(y, 10) + (1 - lam) * F.one_hot(y.roll(1, 0), 10)
    assert loss == pytest.approx(float(F.cross_entropy(logits, soft)), rel=1e-5)


def test_cutmix_pastes_a_box_of_the_rolled_batch_and_bce_scores_per_class() -> None:
    torch.manual_seed(1)
    model = ImageClassifier(tiny_net(), cutmix_alpha=1.0, loss="bce", label_smoothing=0.1).eval()
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 10
    seen, loss, logits = _train_step_inputs(model, x, y)
    pasted = (seen == x.roll(1, 0)).all(dim=(0, 1))  # one box, the same for every image of the batch
    assert ((seen == x).all(dim=(0, 1)) | pasted).all()
    lam = 1 - float(pasted.float().mean())  # the area kept from each image
    soft = lam * F.one_hot(y, 10) + (1 - lam) * F.one_hot(y.roll(1, 0), 10)
    soft = soft * 0.9 + 0.1 / 10
    assert loss == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, soft)), rel=1e-5)


def test_mixing_and_bce_train_through_the_trainer(tmp_path) -> None:
    data = tiny_data(train_size=32, val_size=32)
    data.val_set = data.train_set
    model = ImageClassifier(tiny_net(), mixup_alpha=0.2, cutmix_alpha=1.0, loss="bce", lr=0.05, schedule="constant")
    t = trainer(tmp_path, max_epochs=3)
    t.fit(model, data)
    assert all(torch.isfinite(v) for v in t.callback_metrics.values())
    assert {"train/loss_epoch", "val/loss", "val/err1"} <= set(t.callback_metrics)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr=0.0 must be positive"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0 must be >= 0"),
        ({"label_smoothing": 1.0}, "label_smoothing=1.0 must be in"),
        ({"milestones": [60, 30]}, "milestones=[60, 30] must be increasing"),
        ({"schedule": "linear"}, "schedule='linear' is not one of multistep, plateau, cosine, constant"),
        ({"lr_scaling": "sqrt"}, "lr_scaling='sqrt' is not one of none, linear"),
        ({"optimizer": "lars"}, "optimizer='lars' is not one of sgd, adamw, lamb"),
        ({"mixup_alpha": -0.2}, "mixup_alpha=-0.2 must be >= 0"),
        ({"loss": "focal"}, "loss='focal' is not one of ce, bce"),
        ({"betas": (0.9, 1.0)}, "betas=[0.9, 1.0] must each be in"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ImageClassifier(tiny_net(), **kwargs)


def test_topk_accuracy_equals_torchmetrics_accuracy_for_each_k() -> None:
    from torchmetrics.classification import MulticlassAccuracy

    from src.models.classifier import TopKAccuracy

    ours = TopKAccuracy([1, 5])
    library = [MulticlassAccuracy(10, top_k=k, average="micro") for k in (1, 5)]
    for seed in range(4):  # several updates: the running mean must weigh batches by their size
        g = torch.Generator().manual_seed(seed)
        preds, target = torch.randn(17 + seed, 10, generator=g), torch.randint(0, 10, (17 + seed,), generator=g)
        ours.update(preds, target)
        for m in library:
            m.update(preds, target)
    expected = torch.stack([m.compute() for m in library])
    assert expected[0] < expected[1] < 1  # top-1 and top-5 differ here: a swap of the two would show
    torch.testing.assert_close(ours.compute(), expected)


def test_a_training_set_smaller_than_one_batch_stops_before_training(tmp_path) -> None:
    # drop_last would make zero steps, and the run would still report the untrained net's test accuracy
    with pytest.raises(ValueError, match=r"5 training images make no batch of data.batch_size=8"):
        trainer(tmp_path, max_epochs=1).fit(ImageClassifier(tiny_net()), tiny_data(train_size=5, batch_size=8))
