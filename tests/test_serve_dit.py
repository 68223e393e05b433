"""`controlnet serve` on an SD3 or Flux base (issue 21 §2): the model list holds the ControlNets made for
the base's family only, a txt2img request with a ControlNet unit gives the picture `FluxBase` / `SD3Base`
give with the same settings (so `sample_flux` / `sample_sd3`), and the A1111 fields these bases do not run
are refused naming the field; img2img starts from the init image as the samplers' `init_image` does.
Tiny random models over loopback."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import torch
from diffusers.image_processor import VaeImageProcessor

from controlnet.checkpoints import load_controlnet, save_controlnet
from controlnet.checkpoints.dit import save_dit_controlnet
from controlnet.nn import ControlNet
from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet
from controlnet.pipeline.flux import FluxBase, FluxControl
from controlnet.pipeline.images import hint_tensor
from controlnet.pipeline.sd3 import SD3Base, SD3Control
from controlnet.tiny import tiny_unet
from controlnet.web.cost import StepCost
from controlnet.web.guard import Limits
from dit_bases import FLUX, SD3, save_flux_base, save_sd3_base
from serve_tools import b64png, body, decode, running_server
from tiny_models import random_hint, randomized

SIZE = {"flux": 64, "sd3": 8}
ARGS = "alwayson_scripts.controlnet.args"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-dit")
    save_flux_base(root / "flux")
    save_sd3_base(root / "sd3")
    nets = root / "nets"
    save_dit_controlnet(randomized(FluxControlNet(**dict(FLUX, num_layers=1, num_single_layers=2)), 4),
                        nets / "flux-canny.safetensors")
    save_dit_controlnet(randomized(SD3ControlNet(**dict(SD3, num_layers=2)), 5), nets / "sd3-depth.safetensors")
    save_controlnet(ControlNet.from_unet(tiny_unet("sd1"), vae_scale_factor=2), nets / "unet-edges.safetensors")
    return root


@pytest.fixture(scope="module", params=["flux", "sd3"])
def server(request, store):
    from controlnet.web.dit_engine import DiTEngine, open_engine

    engine = open_engine(str(store / request.param), store / "nets")
    assert isinstance(engine, DiTEngine)
    with running_server(Limits(step_cost=StepCost()), served=engine) as (url, _):
        yield request.param, url


def unit(kind: str, **extra) -> dict:
    hint = np.asarray(random_hint(SIZE[kind], SIZE[kind], seed=1))
    return {"enabled": True, "image": b64png(hint), "module": "none", "model": f"{kind}-{'canny' if kind == 'flux' else 'depth'}",
            "weight": 0.8, "guidance_end": 0.5 if kind == "flux" else 1.0, **extra}


def request_body(kind: str, units, **extra) -> dict:
    fields = dict(width=SIZE[kind], height=SIZE[kind], sampler_name="Euler", cfg_scale=4.0,
                  **({"negative_prompt": "blurry"} if kind == "sd3" else {}))
    return body(units=units, **{**fields, **extra})


def test_the_model_list_holds_this_bases_controlnets(server):
    kind, url = server
    titles = requests.get(f"{url}/controlnet/model_list").json()["model_list"]
    assert [t.split(" [")[0] for t in titles] == [f"{kind}-{'canny' if kind == 'flux' else 'depth'}"]


def test_txt2img_with_a_unit_equals_the_base_sampler(server, store):
    kind, url = server
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=request_body(kind, [unit(kind)], seed=7, steps=2))
    assert r.status_code == 200, r.text
    got = decode(r.json()["images"][0])

    base = (FluxBase if kind == "flux" else SD3Base).from_pretrained(store / kind)
    net = load_controlnet(store / "nets" / f"{kind}-{'canny' if kind == 'flux' else 'depth'}.safetensors")
    hint = hint_tensor(np.asarray(random_hint(SIZE[kind], SIZE[kind], seed=1)), SIZE[kind], SIZE[kind]) * 2 - 1
    control = FluxControl(net, hint, 0.8, 0.0, 0.5) if kind == "flux" else SD3Control(net, hint, 0.8)
    extra = {"negative_prompt": "blurry"} if kind == "sd3" else {}
    want = base("a red square on a blue background", [control], width=SIZE[kind], height=SIZE[kind], steps=2,
                guidance_scale=4.0, generator=torch.Generator().manual_seed(7), output_type="np", **extra)
    assert np.array_equal(got, np.asarray(VaeImageProcessor.numpy_to_pil(want)[0]))
    plain = base("a red square on a blue background", [], width=SIZE[kind], height=SIZE[kind], steps=2,
                 guidance_scale=4.0, generator=torch.Generator().manual_seed(7), output_type="np", **extra)
    assert not np.array_equal(got, np.asarray(VaeImageProcessor.numpy_to_pil(plain)[0]))  # the unit acts


@pytest.mark.parametrize("change, field", [
    ({"eta": 0.5}, "eta"),
    ({"width": 72}, "width"),
    ({"unit": {"control_mode": "ControlNet is more important"}}, f"{ARGS}[0].control_mode"),
    ({"unit": {"advanced_weighting": [1.0] * 13}}, f"{ARGS}[0].advanced_weighting"),
    ({"unit": {"weight_schedule": "0:1,0.5:0.2"}}, f"{ARGS}[0].weight_schedule"),
    ({"unit": {"model": "unet-edges"}}, f"{ARGS}[0].model"),
    ({"enable_hr": True}, "enable_hr"),
])
def test_fields_these_bases_do_not_run_are_refused(server, change, field):
    kind, url = server
    change = dict(change)
    units = [unit(kind, **change.pop("unit", {}))]
    if field == "width":
        change["width"] = 72 if kind == "flux" else SIZE[kind]  # the tiny SD3 base takes any size (VAE ×1, patch 1)
        field = "width" if kind == "flux" else None
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=request_body(kind, units, **change))
    if field is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()


def test_img2img_equals_the_base_sampler_from_the_init_image(server, store):
    kind, url = server
    init = np.asarray(random_hint(SIZE[kind], SIZE[kind], seed=3))
    r = requests.post(f"{url}/sdapi/v1/img2img", json=request_body(kind, [unit(kind)], init_images=[b64png(init)],
                                                                    denoising_strength=0.5, seed=7, steps=4))
    assert r.status_code == 200, r.text
    got = decode(r.json()["images"][0])
    base = (FluxBase if kind == "flux" else SD3Base).from_pretrained(store / kind)
    net = load_controlnet(store / "nets" / f"{kind}-{'canny' if kind == 'flux' else 'depth'}.safetensors")
    hint = hint_tensor(np.asarray(random_hint(SIZE[kind], SIZE[kind], seed=1)), SIZE[kind], SIZE[kind]) * 2 - 1
    control = FluxControl(net, hint, 0.8, 0.0, 0.5) if kind == "flux" else SD3Control(net, hint, 0.8)
    extra = {"negative_prompt": "blurry"} if kind == "sd3" else {}
    pixels = torch.from_numpy(init).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    want = base("a red square on a blue background", [control], width=SIZE[kind], height=SIZE[kind], steps=4,
                guidance_scale=4.0, generator=torch.Generator().manual_seed(7), output_type="np", init_image=pixels,
                strength=0.5, **extra)
    assert np.array_equal(got, np.asarray(VaeImageProcessor.numpy_to_pil(want)[0]))
    mask = b64png(np.full((SIZE[kind], SIZE[kind], 3), 255, np.uint8))
    r = requests.post(f"{url}/sdapi/v1/img2img", json=request_body(kind, [unit(kind)], init_images=[b64png(init)],
                                                                    mask=mask))
    assert r.status_code == 422 and r.json()["field"] == "mask", r.text


def test_negative_prompt_and_sampler(server):
    kind, url = server
    if kind == "flux":
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=request_body(kind, [unit(kind)], negative_prompt="blurry"))
        assert r.status_code == 422 and r.json()["field"] == "negative_prompt", r.text
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=request_body(kind, [unit(kind)], sampler_name="DPM++ 2M", steps=1))
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert "flow matching's Euler" in info


def test_compile_is_refused_on_a_transformer_base(store):
    from controlnet.errors import InputError
    from controlnet.web.dit_engine import open_engine

    with pytest.raises(InputError, match="--compile.*transformer base"):
        open_engine(str(store / "flux"), store / "nets", compile=True)
