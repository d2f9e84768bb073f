"""The reference side of docs/benchmarks.md: diffusers sampling on the same
weights as `ddimd sample`. usage: diffusers_sample.py MODEL_DIR COUNT STEPS BATCH DEVICE
Prints one JSON line: images/s over the timed loop (after one warm-up call).
"""
import json
import sys
import time

import torch
from diffusers import DDIMPipeline, DDIMScheduler

model, count, steps, batch, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
pipe = DDIMPipeline.from_pretrained(model).to(device)
sched = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=True)
unet = pipe.unet.eval()
c, s = unet.config.in_channels, unet.config.sample_size
with torch.no_grad():
    unet(torch.randn(batch, c, s, s, device=device), 10)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < count:
        n = min(batch, count - done)
        x = torch.randn(n, c, s, s, device=device)
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            eps = unet(x, t).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        done += n
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
print(json.dumps({"impl": "diffusers", "count": count, "steps": steps, "batch": batch, "seconds": dt, "images_per_s": count / dt}))
