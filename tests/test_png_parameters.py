"""PNG parameters (controlnet.parameters): what the server and `generate` store, A1111's infotext as
sd-webui-controlnet writes it, and `generate --from` replaying a picture made anywhere."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, run_cli
from serve_tools import b64png, body, engine, square, unit

# sd-webui-controlnet's unit fields (internal_controlnet ControlNetUnit) that its infotext may carry
UNIT_FIELDS = {"module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b", "guidance_start",
               "guidance_end", "pixel_perfect", "control_mode"}
# A1111's infotext field pattern (modules/infotext_utils.py, re_param)
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_fields(infotext: str) -> dict:
    """The `key: value` fields of an infotext's last line, unquoted as A1111's PNG Info does."""
    last = infotext.strip().split("\n")[-1]
    return {k: json.loads(v) if v.startswith('"') else v for k, v in RE_PARAM.findall(last)}


def webui_controlnet_unit(text: str) -> dict:
    """sd-webui-controlnet's `parse_unit`: "Field Name: value" pairs split on ',' -> unit fields."""
    pairs = [item.strip().split(": ") for item in text.split(",")]
    assert all(len(p) == 2 for p in pairs), text
    return {"_".join(w.lower() for w in k.split(" ")): v for k, v in pairs}


def server_picture(tmp_path, req_body: dict, kind: str = "txt2img", on_step=None):
    """Generate on the server's engine (in process) and save the PNG it sends: (path, Generated)."""
    from controlnet.web import Limits
    from controlnet.web.results import png_b64
    from controlnet.web.schema import parse_generation

    e = engine()
    out = e.generate(parse_generation(kind, req_body, e, Limits()), on_step or (lambda done, total: None))
    path = tmp_path / "server.png"
    path.write_bytes(base64.b64decode(png_b64(out.images[0], out.params[0])))
    return path, out


CANNY_UNIT = dict(module="canny", processor_res=256, threshold_a=50, threshold_b=150, pixel_perfect=False)


def test_server_png_has_names_and_preprocessor_settings_and_replays_with_the_cli(tmp_path, capsys):
    png, out = server_picture(tmp_path, body(seed=7, steps=2, units=[unit(**CANNY_UNIT)], sampler_name="Euler a"))
    chunk = Image.open(png).text["controlnet"]
    stored = json.loads(chunk)
    assert str(engine().model_path) not in chunk and "builtin_models" not in chunk  # no server path
    assert stored["model"] == "mini" and stored["units"][0]["controlnet"] == "mini:edges"
    u = stored["units"][0]
    assert (u["processor_res"], u["pixel_perfect"]) == (256, False)
    assert u["preprocess_params"] == {"low_threshold": 50, "high_threshold": 150}

    # the upload is not stored: the replay says which picture to give, then reproduces the picture
    condition = tmp_path / "square.png"
    Image.fromarray(square()).save(condition)
    replay = ["generate", "--from", png, "-o", tmp_path / "again"]
    assert_user_error(replay, capsys, "unit 1's condition image", "--image")
    code, stdout, err = run_cli([*replay, "--image", condition], capsys)
    assert code == 0, err
    again = Image.open(stdout.split()[0])
    assert np.array_equal(np.asarray(again), np.asarray(out.images[0]))


def test_infotext_is_sd_webui_controlnets(tmp_path):
    png, _ = server_picture(tmp_path, body(seed=3, steps=2, units=[unit(**CANNY_UNIT, control_mode=2, weight=1)], sampler_name="Euler a"))
    fields = a1111_fields(Image.open(png).text["parameters"])
    assert fields["Sampler"] == "Euler a" and fields["Schedule type"] == "Automatic" and fields["Seed"] == "3"
    assert fields["Model"] == "mini" and fields["Size"] == "64x64"
    assert fields["ControlNet 0"] == ("Module: canny, Model: mini-edges, Weight: 1, Resize Mode: Crop and Resize, "
                                      "Processor Res: 256, Threshold A: 50, Threshold B: 150, Guidance Start: 0, "
                                      "Guidance End: 1, Pixel Perfect: False, Control Mode: ControlNet is more important")
    assert set(webui_controlnet_unit(fields["ControlNet 0"])) <= UNIT_FIELDS  # every field restores a unit field


def test_sampler_labels_as_a1111_writes_them():
    from controlnet.parameters import sampler_label

    assert sampler_label("euler_a") == ("Euler a", "Automatic")
    assert sampler_label("dpmpp_2m_karras") == ("DPM++ 2M", "Karras")
    assert sampler_label("pndm") == ("PLMS", "Automatic")
    assert sampler_label("ddim") == ("DDIM", "Automatic")


def test_unit_values_never_break_the_extensions_parser():
    """A model name with ',' or ':' would split sd-webui-controlnet's unit text: it never appears."""
    from controlnet.parameters import unit_infotext

    text = unit_infotext({"controlnet": "/m/canny, v2: final.safetensors", "weight": 0.5, "start": 0.0, "end": 1.0,
                          "mode": "balanced", "preprocess": None}, "just_resize")
    parsed = webui_controlnet_unit(text)
    assert parsed["model"] == "canny  v2- final" and parsed["module"] == "none" and "processor_res" not in parsed


def test_interrupted_picture_is_marked_and_its_replay_says_so(tmp_path, capsys):
    from controlnet.web.engine import Interrupted

    def stop_at_2(done, total):
        if done == 2:
            raise Interrupted

    png, out = server_picture(tmp_path, body(seed=4, steps=4, units=[unit()]), on_step=stop_at_2)
    assert out.interrupted and out.params[0]["interrupted"] == {"step": 2}
    assert a1111_fields(Image.open(png).text["parameters"])["Interrupted"] == "at step 2 of 4"
    condition = tmp_path / "square.png"
    Image.fromarray(square()).save(condition)
    code, _, err = run_cli(["generate", "--from", png, "--image", condition, "-o", tmp_path / "again"], capsys)
    assert code == 0 and "interrupted at step 2 of 4" in err and "will not be the same picture" in err


def test_img2img_replay_asks_for_the_init_image(tmp_path, capsys):
    png, _ = server_picture(tmp_path, {**body(seed=2, steps=2, units=[unit()]), "init_images": [b64png(square())],
                                       "denoising_strength": 0.5}, kind="img2img")
    stored = json.loads(Image.open(png).text["controlnet"])
    assert stored["strength"] == 0.5 and "init_image" in stored["unstored"]
    assert a1111_fields(Image.open(png).text["parameters"])["Denoising strength"] == "0.5"
    condition = tmp_path / "square.png"
    Image.fromarray(square()).save(condition)
    argv = ["generate", "--from", png, "--image", condition, "-o", tmp_path / "again"]
    assert_user_error(argv, capsys, "init image", "--init-image")
    code, _, err = run_cli([*argv, "--init-image", condition], capsys)
    assert code == 0, err


@pytest.mark.parametrize("extra, fragments", [
    (["--controlnet", "mini:seg", "--image", "{img}"], ["--from replays the stored units", "without --controlnet"]),
    (["--image", "{img}", "--image", "{img}"], ["2 units' pictures given", "1 unit"]),
    (["--image", "{img}", "--weight", "0.5"], ["give --controlnet FILE before --weight"]),
])
def test_replay_pictures_on_the_command_line_are_checked(tmp_path, capsys, extra, fragments):
    png, _ = server_picture(tmp_path, body(seed=1, steps=2, units=[unit()]))
    condition = tmp_path / "square.png"
    Image.fromarray(square()).save(condition)
    argv = ["generate", "--from", png, "-o", tmp_path / "again", *[a.format(img=condition) for a in extra]]
    assert_user_error(argv, capsys, *fragments)
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


def test_cli_stores_how_its_preprocessor_ran(tmp_path, capsys):
    pytest.importorskip("controlnet.annotators")
    photo = tmp_path / "photo.png"
    Image.fromarray(square()).save(photo)
    code, stdout, err = run_cli(["generate", "--model", "mini", "--controlnet", "mini:edges", "--image", photo,
                                 "--preprocess", "canny", "--steps", "1", "--seed", "0", "--width", "64", "--height", "64",
                                 "--no-grid", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    text = Image.open(stdout.split()[0]).text
    u = json.loads(text["controlnet"])["units"][0]
    assert (u["processor_res"], u["pixel_perfect"], u["preprocess_params"]) == (512, True, {"low_threshold": 100,
                                                                                            "high_threshold": 200})
    cn = webui_controlnet_unit(a1111_fields(text["parameters"])["ControlNet 0"])
    assert (cn["processor_res"], cn["threshold_a"], cn["threshold_b"], cn["pixel_perfect"]) == ("512", "100", "200", "True")
    assert cn["model"] == "mini-edges"


@pytest.mark.parametrize("unit_fields, fragments", [
    ({"processor_res": "big"}, ["units[0].processor_res", "wrong type"]),
    ({"pixel_perfect": "yes"}, ["units[0].pixel_perfect", "wrong type"]),
    ({"preprocess_params": [1, 2]}, ["units[0].preprocess_params", "wrong type"]),
    ({"preprocess": "canny", "preprocess_params": {"radius": 3}}, ["canny", "no parameter radius"]),
])
def test_damaged_preprocessor_settings_are_named(tmp_path, capsys, unit_fields, fragments):
    from PIL import PngImagePlugin

    condition = tmp_path / "square.png"
    Image.fromarray(square()).save(condition)
    stored = {"model": "mini", "prompt": "a", "negative_prompt": "", "steps": 1, "seed": 0, "width": 64, "height": 64,
              "units": [{"controlnet": "mini:edges", "image": str(condition), **unit_fields}]}
    info = PngImagePlugin.PngInfo()
    info.add_text("controlnet", json.dumps(stored))
    png = tmp_path / "edited.png"
    Image.fromarray(square()).save(png, pnginfo=info)
    assert_user_error(["generate", "--from", png, "-o", tmp_path / "again"], capsys, *fragments)
