"""A1111 request fields this server does not run. None is dropped silently: set to anything but its
default, a field that would change the picture is refused (422 naming it), one that would not is
reported in `info.warnings`. Clients send every field with its default (webuiapi does), so only
values that ask for something count.
"""

from __future__ import annotations

from controlnet.web.inputs import FieldError


def _shown(key) -> str:
    """A client's key as text that can be sent back (a lone surrogate is escaped, not a 500)."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def _off(value) -> bool:
    """The field's "not asked for" values: A1111's defaults, null, empty."""
    return value in (None, False, 0, "", "None", [], {}) or value == -1


# field -> why it is refused when set (the request would give another picture than asked for)
REFUSED = {
    "enable_hr": "hires fix is not offered here; ask for the final size with width and height",
    "firstpass_image": "hires fix is not offered here",
    "script_name": "scripts are not offered here (GET /sdapi/v1/scripts lists none); leave script_name empty",
    "styles": "styles are not offered here; put the style's text in the prompt",
    "subseed_strength": "variation seeds are not offered here; leave subseed_strength 0",
    "restore_faces": "face restoration is not offered here",
    "tiling": "tiling is not offered here",
    "refiner_checkpoint": "a refiner is not offered here; this server has one model",
    "infotext": "infotext is not applied here; send the settings as fields",
}
# field -> (its default, what is said when it is set otherwise: the picture is as asked for without it)
WARNED = {
    "s_churn": (0, "not applied (no sampler churn here)"),
    "s_tmin": (0, "not applied (no sampler churn here)"),
    "s_tmax": (0, "not applied (no sampler churn here)"),
    "s_noise": (1, "not applied (no sampler noise setting here)"),
    "s_min_uncond": (0, "not applied (negative guidance minimum sigma is not offered here)"),
    "seed_resize_from_w": (0, "not applied (seeds are not resized here)"),
    "seed_resize_from_h": (0, "not applied (seeds are not resized here)"),
    "save_images": (False, "not applied: pictures are not saved on the server, they are in the response"),
    "send_images": (True, "not applied: the pictures are always sent"),
    "initial_noise_multiplier": (1, "not applied (the initial noise is not scaled here)"),
    "include_init_images": (False, "not applied: init images are not sent back"),
}
# sd-webui-controlnet unit fields that ask for modes this server does not run
UNIT_REFUSED = {
    "input_mode": ("simple", "batch and multi-input modes are not offered here; send one unit per image"),
    "batch_images": (None, "batch mode is not offered here; send one request per image"),
    "batch_image_dir": (None, "batch mode is not offered here; send one request per image"),
    "loopback": (False, "loopback is not offered here"),
    "ipadapter_input": (None, "IP-Adapter is not offered here"),
    "use_preview_as_input": (False, "the page's preview is not kept for the API; send the map as image with module none"),
}


def check_request(body: dict, model_name: str, warnings: list[str]) -> None:
    """Refuse the fields above that ask for something, note the ignorable ones in `warnings`."""
    for name, why in REFUSED.items():
        if not _off(body.get(name)):
            raise FieldError(name, f"{why} (got {body[name]!r})")
    for name, (default, note) in WARNED.items():
        value = body.get(name)
        if value is not None and value != default and not (default == 0 and value == -1):
            warnings.append(f"{name} {value!r}: {note}")
    _override_settings(body.get("override_settings"), model_name, warnings)
    _alwayson(body.get("alwayson_scripts"))


def _override_settings(settings, model_name: str, warnings: list[str]) -> None:
    """A1111's per-request options: the model must be this server's (as POST /sdapi/v1/options says);
    the others are not applied."""
    if _off(settings):
        return
    if not isinstance(settings, dict):
        raise FieldError("override_settings", f"must be an object of option: value, got {type(settings).__name__}")
    for key, value in settings.items():
        if key == "sd_model_checkpoint":
            if str(value).split(" [")[0].strip() != model_name:
                raise FieldError("override_settings.sd_model_checkpoint",
                                 f"this server serves {model_name} only (--model), got {value!r}")
        else:
            warnings.append(f"override_settings.{_shown(key)}: not applied (options cannot be changed on this server)")


def _alwayson(scripts) -> None:
    """Always-on scripts other than ControlNet: A1111 refuses the ones it does not have, so does this."""
    if not isinstance(scripts, dict):
        return  # schema.parse_units names the wrong type
    for name in scripts:
        if str(name).lower() != "controlnet":
            raise FieldError(f"alwayson_scripts.{_shown(name)}", "not offered here; only ControlNet runs (alwayson_scripts.controlnet)")


def check_unit(where: str, unit: dict) -> None:
    """A unit's fields that ask for a mode this server does not run."""
    for name, (default, why) in UNIT_REFUSED.items():
        value = unit.get(name)
        if not _off(value) and value != default and str(value).lower() != str(default).lower():
            raise FieldError(f"{where}.{name}", f"{why} (got {value!r})")


# What an SD3 / Flux base (web.dit_engine) does not run, as the request was parsed: UnitRequest attribute ->
# (the unit's A1111 field, its "not asked for" value, why). The sampler is a note, not a refusal: clients send
# theirs by default, and these bases have one (flow matching's Euler).
TRANSFORMER_UNIT_REFUSED = {
    "mode": ("control_mode", "balanced", "control modes weigh a U-Net's guidance halves; SD3/Flux ControlNets have none"),
    "layer_scales": ("advanced_weighting", None, "per-layer weights are for U-Net ControlNets"),
    "region_mask": ("effective_region_mask", None, "regional masks are for U-Net ControlNets"),
    "schedule": ("weight_schedule", None, "weight schedules are for U-Net ControlNets; use guidance_start/end"),
    "control_type": ("union_control_type", None, "union types are for SDXL union ControlNets"),
}


def check_transformer_base(req, kind: str, name: str, size_multiple: int) -> None:
    """Refuse what an SD3 / Flux base (`kind`, called `name`) cannot do in a parsed request (`req.echo`
    set), naming the field; the sampler becomes flow matching's Euler (a note in `req.warnings` when
    another was asked for)."""
    if req.mask is not None:
        raise FieldError("mask", f"inpainting is not offered for {name} bases here; img2img without a mask is")
    if req.eta:
        raise FieldError("eta", f"{name} bases sample with flow matching's Euler, which has no eta; leave it 0")
    if req.approx:
        raise FieldError("approx", f"approximate modes are for U-Net bases; {name} bases sample exactly: leave it out")
    if kind == "flux" and req.negative_prompt:
        raise FieldError("negative_prompt", "a Flux base takes no negative prompt here (its guidance is embedded: "
                                            "cfg_scale); leave it empty")
    for side in ("width", "height"):
        if getattr(req, side) % size_multiple:
            raise FieldError(side, f"{getattr(req, side)} is not a multiple of {size_multiple}, as this {name} base needs")
    for u in req.units:
        from controlnet.web.modules import is_inpaint

        if is_inpaint(u.module):
            raise FieldError(f"{u.field}.module", f"{u.module} is for U-Net inpainting ControlNets, not offered for "
                                                  f"{name} bases")
        for attr, (field, off, why) in TRANSFORMER_UNIT_REFUSED.items():
            value = getattr(u, attr)
            if value is not None and value != off:
                raise FieldError(f"{u.field}.{field}", f"{why} (got {_shown(value if attr != 'region_mask' else 'a mask')})")
    asked = req.echo.get("sampler_name") or req.echo.get("sampler_index")
    if asked and req.sampler != "euler":
        req.warnings.append(f"sampler_name {req.sampler_label!r}: {name} bases sample with flow matching's Euler "
                            "(their scheduler); it was used instead")
    req.sampler, req.sampler_label = "euler", "Euler"
