"""diffusers' side of `ddimd bench`, same protocol, same JSON lines.
usage: diffusers_bench.py MODEL_DIR DEVICE BATCHES STEPS REPEAT MAX_SECONDS [THREADS] [compile|eager] [SOLVERS]
(BATCHES, STEPS and SOLVERS comma-separated; SOLVERS: ddim (DDIMScheduler, the default)
and/or dpmpp-2m (DPMSolverMultistepScheduler, DPM-Solver++ order 2)). `compile`: wrap the UNet in
`torch.compile(dynamic=False)` (what a diffusers user adds for speed; one static graph
per batch size, compiled during the warm-up call, which is not timed) and report
impl "diffusers-compile"."""
import json
import sys
import time

import torch
from diffusers import DDIMPipeline, DDIMScheduler, DPMSolverMultistepScheduler

model, device = sys.argv[1], sys.argv[2]
batches = [int(b) for b in sys.argv[3].split(",")]
steps = [int(s) for s in sys.argv[4].split(",")]
repeat, max_seconds = int(sys.argv[5]), float(sys.argv[6])
if len(sys.argv) > 7 and int(sys.argv[7]) > 0:
    torch.set_num_threads(int(sys.argv[7]))
use_compile = len(sys.argv) > 8 and sys.argv[8] == "compile"
solvers = sys.argv[9].split(",") if len(sys.argv) > 9 else ["ddim"]
impl = "diffusers-compile" if use_compile else "diffusers"
pipe = DDIMPipeline.from_pretrained(model).to(device)
unet = pipe.unet.eval()
if use_compile:
    unet = torch.compile(unet, dynamic=False)
scheds = {
    "ddim": DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=True,
                                      timestep_spacing="leading", steps_offset=0),
    "dpmpp-2m": DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
        timestep_spacing="leading", steps_offset=0),
}
c, s = unet.config.in_channels, unet.config.sample_size


def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()


with torch.no_grad():
    for b in batches:
        x = torch.randn(b, c, s, s, device=device)
        t500 = torch.tensor(500, device=device)
        unet(x, t500)
        sync()
        times = []
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            unet(x, t500)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        ms = sorted(times)[len(times) // 2]
        print(json.dumps({"impl": impl, "batch": b, "ms_per_eval": ms}), flush=True)
        for n in steps:
            for solver in solvers:
                sched = scheds[solver]
                kw = {"eta": 0.0} if solver == "ddim" else {}
                ips = None
                if n * ms / 1e3 <= max_seconds:
                    sched.set_timesteps(n)
                    t0 = time.perf_counter()
                    y = x
                    for t in sched.timesteps:
                        y = sched.step(unet(y, t).sample, t, y, **kw).prev_sample
                    sync()
                    ips = b / (time.perf_counter() - t0)
                print(json.dumps({"impl": impl, "batch": b, "steps": n, "solver": solver,
                                  "images_per_s": ips}), flush=True)
