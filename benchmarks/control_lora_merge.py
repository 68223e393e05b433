"""Control-LoRA: the delta merged once at load (ours) vs `W_unet + up @ down` recomputed in every
forward (ComfyUI's `ControlLoraOps`, sd-webui's `LinearWithLoRA`), in one run: ControlNet forwards
per second of each, their ratio, the one-off merge time, and the largest output difference.

Random weights with the real shapes (SD 1.5 by default: `controlnet.tiny.BASE_SHAPES["sd15"]`).

    OMP_NUM_THREADS=2 python benchmarks/control_lora_merge.py --rank 128 --latent 32 --batch 2
    python benchmarks/control_lora_merge.py --device cuda --latent 64 --batch 2 --dtype fp16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from controlnet.checkpoints import load_controlnet, write_safetensors
from controlnet.checkpoints.control_lora import control_lora_to_ours, factors
from controlnet.dtypes import parse_dtype
from controlnet.tiny import BASE_SHAPES, random_control_lora


class DeltaEveryForward(nn.Module):
    """A Linear/Conv whose weight is rebuilt from the U-Net's weight and the factors on every call."""

    def __init__(self, layer: nn.Module, base_weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor):
        super().__init__()
        self.layer, self.base_weight, self.up, self.down = layer, base_weight, up, down

    def forward(self, x):
        w = self.base_weight + (self.up.flatten(1) @ self.down.flatten(1)).reshape(self.base_weight.shape)
        if isinstance(self.layer, nn.Conv2d):
            return F.conv2d(x, w, self.layer.bias, self.layer.stride, self.layer.padding)
        return F.linear(x, w, self.layer.bias)


def per_forward_variant(merged: nn.Module, unet, lora: dict, device, dtype) -> nn.Module:
    import copy

    variant = copy.deepcopy(merged)
    base = unet.state_dict()
    for module, (up, down) in factors(lora).items():
        parent, _, name = module.rpartition(".")
        holder = variant.get_submodule(parent) if parent else variant
        layer = getattr(holder, name)
        setattr(holder, name, DeltaEveryForward(layer, base[module + ".weight"].to(device, dtype),
                                                up.to(device, dtype), down.to(device, dtype)))
    return variant


def seconds_per_forward(model, inputs, repeats: int, device) -> tuple[float, list]:
    best, out = float("inf"), None
    with torch.no_grad():
        model(*inputs[:3], inputs[3])  # warm-up
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(*inputs[:3], inputs[3])
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best, [*out.down, out.mid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--latent", type=int, default=32, help="latent size (hint is 8x)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**BASE_SHAPES["sd15"]["unet"]).eval()
    tensors = random_control_lora(unet, rank=args.rank, std=0.01)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "control-lora.safetensors"
        write_safetensors(tensors, path)
        start = time.perf_counter()
        merged = load_controlnet(path, base=unet, dtype=dtype, device=device)
        load_s = time.perf_counter() - start
    unet = unet.to(device)
    variant = per_forward_variant(merged, unet, control_lora_to_ours(tensors, "bench"), device, dtype)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(args.batch, 4, args.latent, args.latent, generator=g), torch.tensor(500),
              torch.randn(args.batch, 77, 768, generator=g), torch.rand(args.batch, 3, 8 * args.latent, 8 * args.latent, generator=g)]
    inputs = [x.to(device, dtype) if x.is_floating_point() else x.to(device) for x in inputs]
    s_merged, out_m = seconds_per_forward(merged, inputs, args.repeats, device)
    s_every, out_e = seconds_per_forward(variant, inputs, args.repeats, device)
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(out_m, out_e))
    where = f"{device.type}, {args.dtype}, {torch.get_num_threads()} thread(s)" if device.type == "cpu" else f"{torch.cuda.get_device_name()}, {args.dtype}"
    print(f"SD 1.5-shaped Control-LoRA rank {args.rank}, batch {args.batch}, latent {args.latent}x{args.latent} ({where})")
    print(f"load with the merge once: {load_s:.2f} s (one-off)")
    print(f"merged once:        {s_merged:.3f} s/forward (best of {args.repeats})")
    print(f"delta every forward: {s_every:.3f} s/forward (best of {args.repeats})")
    print(f"ratio (every forward / merged): {s_every / s_merged:.2f}x; largest output difference {diff:.2e}")


if __name__ == "__main__":
    main()
