#!/usr/bin/env python3
"""The trainer check of docs/reproduction.md: diffusers' own training loop, set up as
`ddimd train` is, so that the two loss curves (and the eval FD of the two models) can
be compared.

What is the same as `ddimd train` (daemon/src/train/mod.rs):
- the model: diffusers' UNet2DModel built from the unet/config.json that `ddimd train`
  writes for the preset (pass its pipeline folder as --config-from);
- the objective: DDPMScheduler (linear β 1e-4 → 0.02, T = 1000) `add_noise`, t ~ U{0..T−1},
  MSE between the predicted and the drawn ε (L_simple);
- the data: Debian's dataset-fashion-mnist train split, 28×28 padded to 32×32 with the
  background −1, pixels scaled to [−1, 1], no augmentation;
- the optimiser: Adam (β 0.9/0.999, ε 1e-8, no weight decay), linear warm-up of the
  learning rate over --warmup steps then constant, gradient-norm clipping at --grad-clip,
  and an EMA of the weights (diffusers' EMAModel, decay min(--ema-decay, (1+n)/(10+n)))
  that is what gets saved;
- the log: loss.csv with `step,loss,lr,grad_norm,elapsed_s` every 10 steps.

What is diffusers' own (train_unconditional.py's loop): batches come from a shuffled
DataLoader (epochs without replacement; ddimd draws indices with replacement) and the
random streams are torch's, so the two runs see different batches, t and ε.

The output folder is a diffusers pipeline (UNet2DModel + DDIMScheduler) that ddimd loads
as it is (`ddimd eval --model OUT`).

    . scripts/env.sh
    python scripts/train_diffusers_check.py --config-from /tmp/tiny-ddimd --out /tmp/tiny-diffusers \
        --steps 1500 --batch 32 --lr 1e-3 --warmup 200 --threads 1
"""
import argparse
import gzip
import json
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel


def fashion_mnist_train():
    root = os.environ.get("DDIM_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    with gzip.open(os.path.join(root, "train-images-idx3-ubyte.gz")) as f:
        buf = f.read()
    n, r, c = (int.from_bytes(buf[i : i + 4], "big") for i in (4, 8, 12))
    px = np.frombuffer(buf, dtype=np.uint8, offset=16).reshape(n, 1, r, c)
    x = torch.from_numpy(px.astype(np.float32)) / 127.5 - 1.0
    return F.pad(x, (2, 2, 2, 2), value=-1.0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-from", required=True, help="a pipeline folder made by ddimd train")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    with open(os.path.join(a.config_from, "unet", "config.json")) as f:
        cfg = json.load(f)
    model = UNet2DModel.from_config(cfg)
    model.train()
    ema = EMAModel(model.parameters(), decay=a.ema_decay, use_ema_warmup=False)
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"
    )
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, a.warmup))
    )
    data = fashion_mnist_train()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data),
        batch_size=a.batch,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(a.seed),
    )
    n_params = sum(t.numel() for t in model.parameters())
    print(f"data: {len(data)} images; model: {n_params} parameters", flush=True)

    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "loss.csv"), "w")
    log.write("step,loss,lr,grad_norm,elapsed_s\n")
    started = time.time()
    step = 0
    while step < a.steps:
        for (x0,) in loader:
            noise = torch.randn_like(x0)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],))
            xt = noise_scheduler.add_noise(x0, noise, t)
            pred = model(xt, t).sample
            loss = F.mse_loss(pred, noise)
            opt.zero_grad()
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            ema.step(model.parameters())
            step += 1
            if step % 10 == 0 or step == a.steps:
                el = time.time() - started
                log.write(f"{step},{loss.item():.6f},{lr:.3e},{gn.item():.4f},{el:.1f}\n")
                log.flush()
            if step % 100 == 0:
                print(f"step {step}/{a.steps} loss {loss.item():.4f} {time.time() - started:.0f} s", flush=True)
            if step == a.steps:
                break
    ema.copy_to(model.parameters())
    model.save_pretrained(os.path.join(a.out, "unet"))
    DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
    ).save_pretrained(os.path.join(a.out, "scheduler"))
    shutil.copy(os.path.join(a.config_from, "model_index.json"), a.out)
    print(f"trained to step {step} in {time.time() - started:.1f} s; pipeline in {a.out}")


if __name__ == "__main__":
    main()
