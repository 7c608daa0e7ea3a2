"""Train a small video student from a dvfl cache with a plain PyTorch loop (docs/api.md).

    python examples/train_own_loop.py CACHE ROOT --frames 8 --size 112 --epochs 10

CACHE is a dvfl teacher-logit cache (folder, .zip or URL), ROOT the dataset folder it was
built from. Only the public API is used: open_cache, CachedClips and kd_loss.
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader

from dvfl_cache import CachedClips, open_cache
from dvfl_train import kd_loss


def tiny_student(num_classes: int, width: int = 32) -> nn.Module:
    """Any model that maps clips [B, C, T, H, W] to logits [B, K] will do; this one embeds
    4x4 patches per frame, then mixes neighbouring frames (the classes differ in motion)."""
    return nn.Sequential(
        nn.Conv3d(3, width, kernel_size=(1, 4, 4), stride=(1, 4, 4)), nn.ReLU(),
        nn.Conv3d(width, width, kernel_size=(3, 3, 3), padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(width, num_classes))


def batch_loss(model, batch, *, alpha: float, tau: float, label_smoothing: float = 0.0):
    """The distillation loss of one batch, the same function dvfl-train trains with."""
    logits = model(batch["clip"])
    return kd_loss(logits, batch["teacher_logits"], batch["target"], alpha=alpha, tau=tau,
                   label_smoothing=label_smoothing)["loss"]


@torch.no_grad()
def top1(model, ds, batch_size: int = 16) -> float:
    model.eval()
    hits = sum((model(b["clip"]).argmax(1) == b["label"]).sum().item()
               for b in DataLoader(ds, batch_size=batch_size))
    return hits / len(ds)


def train(cache, root, *, frames=None, size=None, epochs=10, batch_size=8, lr=3e-3,
          alpha=0.5, tau=4.0, workers=0, seed=0):
    torch.manual_seed(seed)
    ds = CachedClips(open_cache(cache), root=root, frames=frames, size=size)
    model = tiny_student(len(ds.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for epoch in range(epochs):
        ds.set_epoch(epoch)  # the cached view dvfl-train replays in this epoch
        model.train()
        for batch in DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers):
            loss = batch_loss(model, batch, alpha=alpha, tau=tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.4f}")
    return model, ds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("root")
    p.add_argument("--frames", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    model, ds = train(a.cache, a.root, frames=a.frames, size=a.size, epochs=a.epochs,
                      workers=a.workers)
    accuracy = top1(model, ds)
    print(f"top-1 on the cached views of the last epoch: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
