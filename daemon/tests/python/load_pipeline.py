"""Loads a pipeline folder written by `ddimd` with diffusers, unchanged, and
runs its UNet. usage: load_pipeline.py DIR X.npy OUT.npy T"""
import sys

import numpy as np
import torch
from diffusers import DDIMPipeline

pipe = DDIMPipeline.from_pretrained(sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    out = pipe.unet(x, int(sys.argv[4])).sample
np.save(sys.argv[3], out.numpy())
print(type(pipe).__name__, type(pipe.scheduler).__name__)
