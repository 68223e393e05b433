"""Makes tests/data/lllite_reference.safetensors: run ONCE, outside the package, with kohya's
sd-scripts `networks/control_net_lllite.py` (commit 48d368fa557731ad0488c07304dfeba8c07910eb).

    mkdir -p /tmp/lllite_ref/networks /tmp/lllite_ref/library
    git -C <sd-scripts clone> show 48d368fa:networks/control_net_lllite.py > /tmp/lllite_ref/networks/control_net_lllite.py
    PYTHONPATH=/tmp/lllite_ref:src python tests/data/make_lllite_reference.py

`library.sdxl_original_unet` / `library.utils` (only imported for a type hint and logging) are stubbed
by this script in /tmp/lllite_ref. kohya's `LLLiteModule` is built for each targeted Linear of the
tiny SDXL U-Net (`controlnet.tiny.tiny_unet("sdxl")`, seed 0), given random weights (seed 1234),
hooked in with its own `apply_to()` (which replaces the Linear's forward), fed the hint as kohya's
sdxl_gen_img does (`2·hint − 1`), and the U-Net is run on `unet_inputs(unet, batch=2, size=8)`.
Stored: the LLLite file's tensors (`lllite_unet_*` keys, exactly as kohya's `state_dict()` names
them), the inputs, and the U-Net output with LLLite (`ref.out`, multiplier 0.7) and without (`ref.plain`).
"""

import pathlib
import sys

import torch
from safetensors.torch import save_file

STUB = pathlib.Path("/tmp/lllite_ref/library")
STUB.mkdir(parents=True, exist_ok=True)
(STUB / "__init__.py").write_text("")
(STUB / "sdxl_original_unet.py").write_text("class SdxlUNet2DConditionModel: pass\n")
(STUB / "utils.py").write_text("def setup_logging(*a, **k): pass\n")
sys.path.insert(0, "/tmp/lllite_ref")

from networks.control_net_lllite import LLLiteModule  # noqa: E402

from controlnet.tiny import tiny_unet, unet_inputs  # noqa: E402

# kohya name -> the tiny diffusers U-Net's module (layers_per_block 2: input_blocks 4,5 are level 1's
# attentions 0,1; output_blocks 0,1,2 are up level 0's attentions 0,1,2). All at latent/2 -> depth 2.
TARGETS = {}
for j, idx in enumerate((4, 5)):
    for t in (0, 1):
        for proj in ("attn1_to_q", "attn1_to_k", "attn1_to_v", "attn2_to_q"):
            TARGETS[f"lllite_unet_input_blocks_{idx}_1_transformer_blocks_{t}_{proj}"] = (
                f"down_blocks.1.attentions.{j}.transformer_blocks.{t}.{proj.replace('_to', '.to')}", 2)
for t in (0, 1):
    TARGETS[f"lllite_unet_middle_block_1_transformer_blocks_{t}_attn1_to_q"] = (
        f"mid_block.attentions.0.transformer_blocks.{t}.attn1.to_q", 2)
for idx in (0, 2):
    TARGETS[f"lllite_unet_output_blocks_{idx}_1_transformer_blocks_1_attn1_to_v"] = (
        f"up_blocks.0.attentions.{idx}.transformer_blocks.1.attn1.to_v", 2)

unet = tiny_unet("sdxl")
sample, t, ehs, hint, added = unet_inputs(unet, batch=2, size=8, vae_scale_factor=8, seed=5)
cond = hint[:1]  # one hint, tiled over the CFG-style batch of 2 (kohya repeats it)
with torch.no_grad():
    plain = unet(sample, t, ehs, added_cond_kwargs=added).sample

g = torch.Generator().manual_seed(1234)
modules, tensors = [], {}
for name, (path, depth) in TARGETS.items():
    m = LLLiteModule(depth, 8, name, unet.get_submodule(path), 4, multiplier=0.7)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    modules.append(m)
    tensors.update({f"{name}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
with torch.no_grad():
    for m in modules:
        m.apply_to()
        m.set_cond_image(cond * 2 - 1)
    out = unet(sample, t, ehs, added_cond_kwargs=added).sample
print("max |out - plain|", (out - plain).abs().max().item())
tensors.update({"ref.sample": sample, "ref.timestep": t.reshape(1), "ref.ehs": ehs, "ref.hint": cond,
                "ref.text_embeds": added["text_embeds"], "ref.time_ids": added["time_ids"], "ref.out": out,
                "ref.plain": plain})
save_file({k: v.contiguous() for k, v in tensors.items()}, "tests/data/lllite_reference.safetensors")
