"""Compile a diffusers UNet2DModel into AOTInductor packages, one per static batch size.

Run by `ddimd compile` with the Python of the venv whose libtorch ddimd links (the
package must be loaded by the same torch version). Not a user entry point, but it
runs by hand too:

    python aoti_compile.py UNET_DIR DEVICE TORCH_VERSION THREADS B:OUT.pt2 [B:OUT.pt2 ...]

UNET_DIR is the folder with config.json + diffusion_pytorch_model.safetensors (a
pipeline's `unet/`); TORCH_VERSION is the libtorch version ddimd links (`unknown`: no
check): a package only loads into the torch that compiled it. THREADS (CPU): the
thread count the package's kernels run with. Inductor writes it into every parallel
loop (`#pragma omp parallel num_threads(N)`, from torch.get_num_threads() at compile
time), and the package uses it whatever the loading process's torch threads are, so it
must be the `--torch-threads` the package will run under (0: torch's default).
The exported signature is the engine's forward(x, t):
    (sample f32 [B, C, H, W], timestep int64 [B]) -> eps f32 [B, C_out, H, W]
exactly as `Model::forward` calls its own UNet (`Tensor::full([B], t, Int64)`).
Each finished package prints one JSON line on stdout; progress goes to stderr.
"""
import json
import os
import sys
import time


def main():
    unet_dir, device, expected, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    jobs = []
    for spec in sys.argv[5:]:
        b, out = spec.split(":", 1)
        jobs.append((int(b), out))
    import torch
    if expected != "unknown" and torch.__version__ != expected:
        raise SystemExit(f"this Python has torch {torch.__version__}, ddimd links {expected}: "
                         "run ddimd compile with the venv ddimd was built against (DDIM_VENV)")
    if threads > 0:
        torch.set_num_threads(threads)
        import torch._inductor.config
        torch._inductor.config.cpp.threads = threads
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel.from_pretrained(unet_dir).to(device=device, dtype=torch.float32).eval()

    class Eps(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep):
            return self.unet(sample, timestep, return_dict=False)[0]

    model = Eps(unet).eval()
    c, s = unet.config.in_channels, unet.config.sample_size
    h, w = (s, s) if isinstance(s, int) else tuple(s)
    for b, out in jobs:
        t0 = time.time()
        x = torch.randn(b, c, h, w, device=device)
        t = torch.full((b,), 500, dtype=torch.int64, device=device)
        with torch.no_grad():
            ep = torch.export.export(model, (x, t), strict=False)
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            tmp = out + ".tmp.pt2"
            torch._inductor.aoti_compile_and_package(ep, package_path=tmp)
            # Check the package against eager before publishing it.
            runner = torch._inductor.aoti_load_package(tmp)
            got = runner(x, t)
            ref = model(x, t)
            rel = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        if not rel <= 1e-4:
            os.unlink(tmp)
            raise SystemExit(f"batch {b}: compiled output differs from eager by {rel:.3g} (relative)")
        os.replace(tmp, out)
        print(json.dumps({"batch": b, "path": out, "seconds": round(time.time() - t0, 1),
                          "max_rel_diff": rel, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
