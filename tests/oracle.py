"""The plain way: one `nn.Sequential`, `torch.optim.Adam`, Keras-style early stopping.

What the stacked engine must agree with, member by member.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdbench.engine.mlp import member_module


def _fit(opt, batch_loss, val_loss, shuffle_seed, n, *, batch, epochs, patience) -> int:
    """Keras' loop, written out: shuffle, minibatch steps, then early stopping on the
    validation loss (patience=None: exactly `epochs`). Returns the epochs trained."""
    gen = torch.Generator().manual_seed(shuffle_seed)
    best, wait, trained = math.inf, 0, 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch):
            loss = batch_loss(perm[s : s + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained += 1
        if patience is not None:
            with torch.no_grad():
                val = float(val_loss())
            if val < best:
                best, wait = val, 0
            else:
                wait += 1
                if wait >= patience:
                    break
    return trained


def train_alone(
    init_params,
    member,
    shuffle_seed,
    splits,
    *,
    lr,
    eps,
    batch,
    epochs,
    patience=None,
    targets_train=None,
    targets_val=None,
    temperature=1.0,
    alpha=1.0,
):
    """Returns (module, epochs trained). patience=None trains exactly `epochs` epochs."""
    net = member_module(init_params, member)
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=eps, foreach=False)

    def loss_fn(logits, y, soft):
        ce = F.cross_entropy(logits, y)
        if soft is None:
            return ce
        log_s = F.log_softmax(logits / temperature, dim=1)
        kl = F.kl_div(log_s, soft, reduction="batchmean")
        return alpha * ce + (1 - alpha) * temperature**2 * kl

    def batch_loss(idx):
        soft = None if targets_train is None else targets_train[idx]
        return loss_fn(net(splits.x_train[idx]), splits.y_train[idx], soft)

    trained = _fit(
        opt, batch_loss, lambda: loss_fn(net(splits.x_val), splits.y_val, targets_val),
        shuffle_seed, len(splits.x_train), batch=batch, epochs=epochs, patience=patience,
    )  # fmt: skip
    return net, trained


def train_joint_alone(
    init_params,
    member,
    shuffle_seed,
    teachers,
    splits,
    *,
    lr,
    eps,
    batch,
    epochs,
    patience,
    temperature,
    alpha,
):
    """The paper's Keras distiller as written: one optimizer over the student *and* its
    teachers (`teachers`: modules, trained in place), soft targets from the current teachers at
    every step, early stopping on the combined validation loss with the current teachers.
    Returns (student, epochs trained)."""
    net = member_module(init_params, member)
    params = list(net.parameters()) + [p for t in teachers for p in t.parameters()]
    opt = torch.optim.Adam(params, lr=lr, eps=eps, foreach=False)

    def loss_fn(x, y):
        soft = torch.stack([F.softmax(t(x) / temperature, dim=1) for t in teachers]).mean(0)
        logits = net(x)
        log_s = F.log_softmax(logits / temperature, dim=1)
        kl = F.kl_div(log_s, soft, reduction="batchmean")
        return alpha * F.cross_entropy(logits, y) + (1 - alpha) * temperature**2 * kl

    trained = _fit(
        opt, lambda idx: loss_fn(splits.x_train[idx], splits.y_train[idx]),
        lambda: loss_fn(splits.x_val, splits.y_val),
        shuffle_seed, len(splits.x_train), batch=batch, epochs=epochs, patience=patience,
    )  # fmt: skip
    return net, trained
