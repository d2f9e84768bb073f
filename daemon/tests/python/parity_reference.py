"""Reference outputs from huggingface/diffusers for the engine's parity tests.

usage: parity_reference.py OUT_DIR
Writes, for each config, a diffusers pipeline folder with random weights
(saved by diffusers itself), UNet outputs at several timesteps, and a 50-step
eta=0 DDIMScheduler loop, and DPMSolverMultistepScheduler (dpmsolver++, order 2,
lower_order_final) loops on the engine's uniform and quad timesteps (passed
explicitly, so both sides use exactly the same sub-sequence); plus the betas of
all three schedules.
"""
import json
import os
import sys

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel

out = sys.argv[1]
torch.manual_seed(0)
torch.set_num_threads(2)

T = 1000


def uniform(s):
    """The engine's uniform spacing (daemon/src/engine/spacing.rs), ascending."""
    return [i * T // s for i in range(s)]


def quad(s):
    """The engine's quad spacing (daemon/src/engine/spacing.rs), ascending."""
    if s == 1:
        return [0]
    c = (T - 1) / ((s - 1) * (s - 1))
    v = [int(np.floor(c * (i * i))) for i in range(s)]
    for i in range(1, s):
        v[i] = max(v[i], v[i - 1] + 1)
    v[-1] = min(v[-1], T - 1)
    for i in range(s - 2, -1, -1):
        v[i] = min(v[i], v[i + 1] - 1)
    return v


# (spacing, S) of the DPM-Solver++(2M) loops: S = 2 and 3 are mostly the
# lower-order first and last steps, 10 and 20 mostly second order.
DPM_CASES = [("uniform", 2), ("uniform", 3), ("uniform", 10), ("uniform", 20), ("quad", 10)]

CONFIGS = {
    "gray_noattn": dict(
        sample_size=16, in_channels=1, out_channels=1,
        block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
        norm_eps=1e-6, attention_head_dim=8,
    ),
    "rgb_attn": dict(
        sample_size=16, in_channels=3, out_channels=3,
        block_out_channels=(16, 32, 32), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    ),
}

for name, cfg in CONFIGS.items():
    d = os.path.join(out, name)
    unet = UNet2DModel(**cfg)
    # Default init leaves norms at identity and some biases at zero: perturb
    # every parameter so the test sees every weight.
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    unet.eval()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                          beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                          steps_offset=0, timestep_spacing="leading")
    DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(d)
    c = cfg["in_channels"]
    x = torch.randn(2, c, 16, 16)
    outs = {}
    with torch.no_grad():
        for t in (0, 37, 500, 999):
            outs[t] = unet(x, t).sample.numpy()
    np.save(os.path.join(d, "x.npy"), x.numpy())
    for t, o in outs.items():
        np.save(os.path.join(d, f"out_t{t}.npy"), o)
    # 50-step eta=0 loop from x_T.
    sched.set_timesteps(50)
    xt = torch.randn(2, c, 16, 16)
    s = xt.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(s, t).sample
            s = sched.step(eps, t, s, eta=0.0).prev_sample
    np.save(os.path.join(d, "xt.npy"), xt.numpy())
    np.save(os.path.join(d, "sample50.npy"), s.numpy())
    with open(os.path.join(d, "timesteps50.json"), "w") as f:
        json.dump([int(t) for t in sched.timesteps], f)
    # DPM-Solver++(2M) from the same x_T on the engine's timesteps.
    for spacing, steps in DPM_CASES:
        ts = (uniform if spacing == "uniform" else quad)(steps)[::-1]
        dpm = DPMSolverMultistepScheduler(
            num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
            lower_order_final=True, final_sigmas_type="zero", thresholding=False,
            prediction_type="epsilon")
        dpm.set_timesteps(timesteps=ts)
        assert [int(t) for t in dpm.timesteps] == ts
        s = xt.clone()
        with torch.no_grad():
            for t in dpm.timesteps:
                eps = unet(s, t).sample
                s = dpm.step(eps, t, s).prev_sample
        np.save(os.path.join(d, f"dpm_{spacing}{steps}.npy"), s.numpy())
        with open(os.path.join(d, f"dpm_{spacing}{steps}.json"), "w") as f:
            json.dump(ts, f)

for kind in ("linear", "scaled_linear", "squaredcos_cap_v2"):
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule=kind, beta_start=1e-4, beta_end=0.02)
    np.save(os.path.join(out, f"betas_{kind}.npy"), s.betas.numpy().astype(np.float64))
print("ok")
