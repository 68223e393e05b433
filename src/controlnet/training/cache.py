"""VAE latents and text embeddings, computed once and kept on disk.

The locked VAE and text encoder give the same output for the same input, so their work can be done
once per image and prompt instead of once per step (for SD1.5 encoding a 512² image costs about half
as much as the training step itself, successors_metrics.md §5). The VAE's posterior is stored (mean
and std), not a sample of it, so every step still draws a fresh latent as the uncached run does.

Keys are content hashes: the pixels the VAE sees (after resize/crop) or the prompt text, under a
folder named by the model's weight hash and dtype. A changed image, resolution or model therefore
misses the cache instead of reading stale features. Files are written atomically (temp + rename),
so several processes can share one cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from controlnet.files import atomic_file

TEXT_NAMES = ("ehs", "pooled")  # the stored names of an embedding's parts


class FeatureCache:
    def __init__(self, directory: str | Path, vae_hash: str, text_hash: str):
        self.dir = Path(directory)
        self.latent_dir = self.dir / "latents" / vae_hash
        self.text_dir = self.dir / "text" / text_hash
        self.text_memory: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0

    @staticmethod
    def _path(folder: Path, key: str) -> Path:
        return folder / key[:2] / f"{key}.safetensors"

    @staticmethod
    def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
        with atomic_file(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))

    def posterior(self, keys: list[str], images: torch.Tensor, encode) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z|x) for each image; `encode(images) -> (mean, std)` runs only on misses."""
        found: dict[int, dict[str, torch.Tensor]] = {}
        for i, key in enumerate(keys):
            path = self._path(self.latent_dir, key)
            if path.is_file():
                try:
                    found[i] = load_file(str(path))
                except Exception:  # a truncated file from a killed run: recompute it
                    pass
        missing = [i for i in range(len(keys)) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            mean, std = encode(images[missing])
            for j, i in enumerate(missing):
                found[i] = {"mean": mean[j], "std": std[j]}
                self._write(self._path(self.latent_dir, keys[i]), found[i])
        device = images.device
        return (torch.stack([found[i]["mean"] for i in range(len(keys))]).to(device),
                torch.stack([found[i]["std"] for i in range(len(keys))]).to(device))

    def text(self, prompts: list[str], embed):
        """Text embeddings for each prompt; `embed(prompts)` runs only on misses and returns a tensor, or a
        tuple of tensors (SD3/Flux: token states and pooled vector), which this returns alike, stacked."""
        keys = [hashlib.blake2b(p.encode("utf-8"), digest_size=16).hexdigest() for p in prompts]
        missing = []
        for p, key in zip(prompts, keys):
            if key in self.text_memory:
                continue
            path = self._path(self.text_dir, key)
            if path.is_file():
                try:
                    stored = load_file(str(path))
                    self.text_memory[key] = tuple(stored[n] for n in TEXT_NAMES if n in stored)
                    continue
                except Exception:
                    pass
            if p not in missing:
                missing.append(p)
        if missing:
            if len(self.text_memory) > 4096:  # many unique captions: keep memory bounded, disk has them
                self.text_memory = {k: self.text_memory[k] for k in keys if k in self.text_memory}
            out = embed(missing)
            parts = out if isinstance(out, tuple) else (out,)
            for j, p in enumerate(missing):
                key = hashlib.blake2b(p.encode("utf-8"), digest_size=16).hexdigest()
                self.text_memory[key] = tuple(t[j].detach().cpu() for t in parts)
                self._write(self._path(self.text_dir, key), dict(zip(TEXT_NAMES, self.text_memory[key])))
        stacked = tuple(torch.stack(t) for t in zip(*(self.text_memory[k] for k in keys)))
        return stacked if len(stacked) > 1 else stacked[0]
