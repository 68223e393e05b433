"""Bad inputs to `controlnet inspect / convert / transfer` and to `load_controlnet` / `save_controlnet`:
each gets one clear line naming the input (exit code 2; 1 for a full disk) and leaves the user's
files as they were: no file changed, no partial file left, nothing run from a pickle.

Fast: one tiny ControlNet, written once per module and copied into each case's folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from bad_input_tools import assert_user_error, full_disk, needs_posix, read_only, run_cli, snapshot, unchanged
from controlnet import ControlNet, load_controlnet, save_controlnet
from controlnet.checkpoints import ours_to_original, read_tensors
from controlnet.errors import CheckpointError, InputError
from controlnet.tiny import tiny_unet


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Good inputs: an original-layout file, a diffusers folder, base and community U-Nets."""
    root = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    cn = ControlNet.from_unet(tiny_unet("sd1"), vae_scale_factor=2)
    save_controlnet(cn, root / "cn.safetensors", layout="original")
    save_controlnet(cn, root / "cn_folder")
    tiny_unet("sd1").save_pretrained(root / "base" / "unet")
    tiny_unet("sd1", seed=1).save_pretrained(root / "community" / "unet")
    tiny_unet("sdxl").save_pretrained(root / "xl" / "unet")
    return root


def put(store, tmp_path, *names):
    """Copies of good inputs in this case's folder."""
    for name in names:
        src = store / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return [tmp_path / n for n in names]


# ---------------------------------------------------------------- --config files

CONFIGS = {
    "garbage.json": (os.urandom(64) + b"\xff\xfe", ["garbage.json", "not a text file"]),
    "broken.json": (b'{"block_out_channels": [32, 64', ["broken.json", "not valid json"]),
    "list.json": (b"[32, 64]", ["list.json", "json list", "object"]),
    "number.json": (b"42", ["number.json", "json int"]),
    "deep.json": (b"[" * 100_000 + b"]" * 100_000, ["deep.json", "nested too deeply"]),
    "bad.yaml": (b"model: [unclosed\n  params: {", ["bad.yaml", "not valid yaml"]),
    "garbage.yaml": (b"\xff\xfe\x00binary", ["garbage.yaml", "not a text file"]),
    "list.yaml": (b"- a\n- b\n", ["list.yaml", "yaml list"]),
    "weird.yaml": (b"model: 3\n", ["weird.yaml", "not an original controlnet config"]),
    "types.json": (b'{"block_out_channels": "abc", "layers_per_block": "two"}', ["cn.safetensors", "does not build"]),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_convert_with_a_bad_config_file(store, tmp_path, capsys, name):
    (src,) = put(store, tmp_path, "cn.safetensors")
    content, fragments = CONFIGS[name]
    (tmp_path / name).write_bytes(content)
    with unchanged(tmp_path):
        assert_user_error(["convert", src, tmp_path / "out", "--to", "diffusers", "--config", tmp_path / name],
                          capsys, *fragments)


@pytest.mark.parametrize("config", ["missing.json", "empty_folder"])
def test_convert_with_a_config_that_is_not_there(store, tmp_path, capsys, config):
    (src,) = put(store, tmp_path, "cn.safetensors")
    (tmp_path / "empty_folder").mkdir()
    with unchanged(tmp_path):
        assert_user_error(["convert", src, tmp_path / "out", "--to", "diffusers", "--config", tmp_path / config],
                          capsys, config, "no such file")


def test_load_controlnet_with_a_config_of_the_wrong_type(store, tmp_path):
    (src,) = put(store, tmp_path, "cn.safetensors")
    with pytest.raises(InputError, match="config must be a dict"):
        load_controlnet(src, config=42)


# ---------------------------------------------------------------- diffusers folders

FOLDER_CONFIGS = {
    "binary": (os.urandom(32) + b"\xff", "not a text file"),
    "list": (b'["ControlNetModel"]', "json list"),
    "invalid": (b'{"_class_name": "ControlNetModel",', "not valid json"),
    "deep": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("kind", sorted(FOLDER_CONFIGS))
def test_inspect_a_folder_whose_config_json_is_wrong(store, tmp_path, capsys, kind):
    (folder,) = put(store, tmp_path, "cn_folder")
    content, fragment = FOLDER_CONFIGS[kind]
    (folder / "config.json").write_bytes(content)
    with unchanged(tmp_path):
        assert_user_error(["inspect", folder], capsys, "config.json", fragment)


@pytest.mark.parametrize("kind", sorted(FOLDER_CONFIGS))
def test_load_a_folder_whose_config_json_is_wrong(store, tmp_path, kind):
    (folder,) = put(store, tmp_path, "cn_folder")
    content, fragment = FOLDER_CONFIGS[kind]
    (folder / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=f"(?i)config.json.*{fragment}"):
        load_controlnet(folder)


def test_inspect_a_folder_without_config(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("not a model")
    with unchanged(tmp_path):
        assert_user_error(["inspect", tmp_path / "folder"], capsys, "folder", "without config.json")


def test_inspect_a_folder_without_weights(store, tmp_path, capsys):
    (folder,) = put(store, tmp_path, "cn_folder")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with unchanged(tmp_path):
        assert_user_error(["inspect", folder], capsys, "cn_folder", "no weights file")


# ---------------------------------------------------------------- broken checkpoint files


def _truncated_pth(store, path):
    torch.save(read_tensors(store / "cn.safetensors")[0], path)
    path.write_bytes(path.read_bytes()[:5000])


BROKEN = {
    "cut.safetensors": (lambda store, p: p.write_bytes((store / "cn.safetensors").read_bytes()[:3000]), ["truncated"]),
    "cut.pth": (_truncated_pth, ["cut.pth", "truncated"]),
    "empty.safetensors": (lambda store, p: p.write_bytes(b""), ["empty.safetensors", "empty"]),
    "empty.pth": (lambda store, p: p.write_bytes(b""), ["empty.pth", "empty"]),
    "noise.ckpt": (lambda store, p: p.write_bytes(os.urandom(4096)), ["noise.ckpt", "neither a safetensors"]),
    "config.json": (lambda store, p: p.write_text('{"a": 1}'), ["config.json", "neither a safetensors"]),
    "header.safetensors": (lambda store, p: p.write_bytes((100).to_bytes(8, "little") + b"{" + b"x" * 99),
                           ["header.safetensors", "not a readable safetensors"]),
}


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files(store, tmp_path, capsys, name, command):
    make, fragments = BROKEN[name]
    make(store, tmp_path / name)
    argv = ["inspect", tmp_path / name] if command == "inspect" else \
        ["convert", tmp_path / name, tmp_path / "out.safetensors", "--to", "original"]
    with unchanged(tmp_path):
        assert_user_error(argv, capsys, name if name != "cut.safetensors" else "cut", *fragments)


def _with(store, path, change):
    tensors, meta = read_tensors(store / "cn.safetensors")
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _poison(key, value):
    def change(tensors, meta):
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[3] = value
    return change


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(store, tmp_path, capsys, value):
    key = "control_model.input_blocks.1.0.in_layers.2.weight"
    _with(store, tmp_path / "bad.safetensors", _poison(key, value))
    with pytest.raises(CheckpointError, match=r"bad.safetensors.*input_blocks\.1\.0\.in_layers\.2\.weight.*NaN or infinite"):
        load_controlnet(tmp_path / "bad.safetensors")
    with unchanged(tmp_path):
        assert_user_error(["convert", tmp_path / "bad.safetensors", tmp_path / "out", "--to", "diffusers"],
                          capsys, "bad.safetensors", "input_blocks.1.0.in_layers.2.weight", "nan or infinite")


def test_non_finite_weights_in_a_diffusers_folder(store, tmp_path):
    (folder,) = put(store, tmp_path, "cn_folder")
    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors, meta = read_tensors(weights)
    tensors["controlnet_mid_block.bias"] = torch.full_like(tensors["controlnet_mid_block.bias"], float("nan"))
    save_file(tensors, str(weights), metadata=meta)
    with pytest.raises(CheckpointError, match="controlnet_mid_block.bias"):
        load_controlnet(folder)


def test_inspect_reports_non_finite_weights_instead_of_refusing(store, tmp_path, capsys):
    _with(store, tmp_path / "bad.safetensors", _poison("control_model.middle_block_out.0.weight", float("nan")))
    with unchanged(tmp_path):
        code, out, _ = run_cli(["inspect", tmp_path / "bad.safetensors"], capsys)
    assert code == 0 and "non finite tensors" in out and "1 (first: controlnet_mid_block.weight)" in out


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys, monkeypatch, command, kind):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    if kind == "torch.save":
        torch.save({"control_model.zero_convs.0.0.weight": torch.zeros(1), "payload": Exploit()}, path)
    else:
        path.write_bytes(pickle.dumps(Exploit(), protocol=2))
    argv = ["inspect", path] if command == "inspect" else ["convert", path, tmp_path / "out", "--to", "diffusers"]
    with unchanged(tmp_path):
        assert_user_error(argv, capsys, "evil.pth")
    assert not (tmp_path / "EXPLOITED").exists()


KEY_SETS = {
    "unknown": ({"encoder.weight": torch.zeros(2)}, "not a controlnet checkpoint"),
    "t2i": ({"adapter.body.0.resnets.0.block1.weight": torch.zeros(2)}, "t2i-adapter"),
    "lora": ({"lora_controlnet.x": torch.zeros(2)}, "control-lora"),
    "sd": ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, "without a controlnet"),
    "stray key": (None, "control_model.foo.weight"),
}


@pytest.mark.parametrize("kind", sorted(KEY_SETS))
def test_unknown_key_layouts(store, tmp_path, capsys, kind):
    tensors, fragment = KEY_SETS[kind]
    path = tmp_path / "model.safetensors"
    if tensors is None:
        _with(store, path, lambda t, m: t.update({"control_model.foo.weight": torch.zeros(2)}))
    else:
        save_file(tensors, str(path))
    with unchanged(tmp_path):
        assert_user_error(["convert", path, tmp_path / "out", "--to", "diffusers"], capsys, "model.safetensors", fragment)


@pytest.mark.parametrize("stored", ["{not json", "[" * 100_000])
def test_corrupt_stored_config(store, tmp_path, capsys, stored):
    _with(store, tmp_path / "cn.safetensors", lambda t, m: m.update({"controlnet_config": stored}))
    with unchanged(tmp_path):
        assert_user_error(["inspect", tmp_path / "cn.safetensors"], capsys, "cn.safetensors", "header is corrupt")


# ---------------------------------------------------------------- output places and dtypes


def test_convert_overwrite_onto_a_file_where_a_folder_is_expected(store, tmp_path, capsys):
    (src,) = put(store, tmp_path, "cn.safetensors")
    (tmp_path / "out").write_text("my notes")
    with unchanged(tmp_path):
        assert_user_error(["convert", src, tmp_path / "out", "--to", "diffusers", "--overwrite"], capsys,
                          "out", "is a file", "folder")


@pytest.mark.parametrize("to, name", [("diffusers", "out.safetensors"), ("original", "out.pth")])
def test_convert_overwrite_onto_a_folder_where_a_file_is_expected(store, tmp_path, capsys, to, name):
    (src,) = put(store, tmp_path, "cn.safetensors")
    (tmp_path / name).mkdir()
    (tmp_path / name / "keep.txt").write_text("mine")
    with unchanged(tmp_path):
        assert_user_error(["convert", src, tmp_path / name, "--to", to, "--overwrite"], capsys, name, "is a folder")


@pytest.mark.parametrize("argv_tail, fragments", [
    (["out_folder", "--to", "original"], ["out_folder", "single file"]),
    (["cn.safetensors", "--to", "original", "--overwrite"], ["same path"]),
    (["existing.safetensors", "--to", "original"], ["existing.safetensors", "exists", "--overwrite"]),
    (["out", "--to", "diffusers", "--dtype", "fp8"], ["fp8", "fp16"]),
    (["out", "--to", "diffusers", "--dtype", "int8"], ["int8"]),
])
def test_convert_refuses_before_loading(store, tmp_path, capsys, argv_tail, fragments):
    (src,) = put(store, tmp_path, "cn.safetensors")
    (tmp_path / "existing.safetensors").write_text("old")
    with unchanged(tmp_path):
        assert_user_error(["convert", src, tmp_path / argv_tail[0], *argv_tail[1:]], capsys, *fragments)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_folder").exists()


@pytest.mark.parametrize("call", [
    lambda cn, p: save_controlnet(cn, p / "x.safetensors", dtype="fp8"),
    lambda cn, p: save_controlnet(cn, p / "x.safetensors", layout="bogus"),
    lambda cn, p: save_controlnet(cn, p / "folder", layout="original"),
    lambda cn, p: load_controlnet(p / "cn.safetensors", dtype="int8"),
], ids=["save dtype", "save layout", "original as folder", "load dtype"])
def test_api_refuses_bad_dtypes_and_layouts(store, tmp_path, call):
    put(store, tmp_path, "cn.safetensors")
    cn = load_controlnet(tmp_path / "cn.safetensors")
    with unchanged(tmp_path), pytest.raises(InputError):
        call(cn, tmp_path)


def test_lite_controlnet_has_no_original_layout(tmp_path):
    lite = ControlNet.from_unet(tiny_unet("sd1"), vae_scale_factor=2, copy="lite")
    with unchanged(tmp_path), pytest.raises(InputError, match="lite"):
        save_controlnet(lite, tmp_path / "lite.safetensors", layout="original")


@needs_posix
def test_convert_into_a_read_only_folder(store, tmp_path, capsys):
    (src,) = put(store, tmp_path, "cn.safetensors")
    src.chmod(0o644)  # readable by the unprivileged user read_only() runs as
    locked = tmp_path / "locked"
    with unchanged(tmp_path), read_only(locked):
        assert_user_error(["convert", src, locked / "out.safetensors", "--to", "original"], capsys,
                          "locked", "not writable")


@needs_posix
@pytest.mark.parametrize("target, to", [("old.safetensors", "original"), ("old_folder", "diffusers")])
def test_full_disk_during_convert_keeps_the_old_output(store, tmp_path, capsys, target, to):
    (src,) = put(store, tmp_path, "cn.safetensors")
    if to == "original":
        (tmp_path / target).write_bytes(b"old model")
    else:
        put(store, tmp_path, "cn_folder")
        (tmp_path / "cn_folder").rename(tmp_path / target)
    before = snapshot(tmp_path)
    with full_disk(20_000):
        assert_user_error(["convert", src, tmp_path / target, "--to", to, "--overwrite", "--dtype", "fp32"],
                          capsys, "disk is full", code=1)
    assert snapshot(tmp_path) == before  # the old output survives, no partial file


@needs_posix
def test_full_disk_writing_a_new_folder_leaves_nothing(store, tmp_path, capsys):
    (src,) = put(store, tmp_path, "cn.safetensors")
    with unchanged(tmp_path), full_disk(20_000):
        assert_user_error(["convert", src, tmp_path / "new_folder", "--to", "diffusers"], capsys, "disk is full", code=1)
    assert not (tmp_path / "new_folder").exists()


# ---------------------------------------------------------------- transfer


@pytest.mark.parametrize("case, fragments", [
    ("xl base", ["base model lacks", "same architecture"]),
    ("xl community", ["community model lacks", "same architecture"]),
    ("xl base and community", ["not of the same family"]),
    ("missing community", ["nope.safetensors", "no such file"]),
    ("noise community", ["noise.ckpt"]),
    ("base without weights", ["empty_base", "no u-net weights"]),
    ("partial community", ["community model lacks"]),
    ("output exists", ["moved.safetensors", "exists"]),
    ("bad dtype", ["fp7"]),
])
def test_transfer_with_mismatched_or_bad_inputs(store, tmp_path, capsys, case, fragments):
    control, base, community, xl = put(store, tmp_path, "cn.safetensors", "base", "community", "xl")
    out, extra = tmp_path / "moved.safetensors", []
    if case == "xl base":
        base = xl
    elif case == "xl base and community":
        base = community = xl
    elif case == "xl community":
        community = xl
    elif case == "missing community":
        community = tmp_path / "nope.safetensors"
    elif case == "noise community":
        community = tmp_path / "noise.ckpt"
        community.write_bytes(os.urandom(2048))
    elif case == "base without weights":
        base = tmp_path / "empty_base"
        (base / "unet").mkdir(parents=True)
    elif case == "partial community":
        community = tmp_path / "partial.safetensors"
        state = tiny_unet("sd1", seed=1).state_dict()
        encoder = {k: v for k, v in state.items() if k.startswith(("conv_in", "down_blocks.0"))}
        save_file({"model.diffusion_model." + k: v.contiguous() for k, v in ours_to_original(encoder, 2).items()},
                  str(community))
    elif case == "output exists":
        out.write_text("old")
    elif case == "bad dtype":
        extra = ["--dtype", "fp7"]
    with unchanged(tmp_path):
        assert_user_error(["transfer", "--control", control, "--base", base, "--community", community, "-o", out,
                           *extra], capsys, *fragments)


def test_inputs_survive_a_good_convert(store, tmp_path, capsys):
    """The converse: a working conversion changes nothing but its output, and keeps the stored dtype."""
    (src,) = put(store, tmp_path, "cn.safetensors")
    save_controlnet(load_controlnet(src), tmp_path / "half.safetensors", layout="original", dtype="float16")
    before = snapshot(tmp_path)
    assert_user_error(["convert", tmp_path / "half.safetensors", tmp_path / "out", "--to", "diffusers"], capsys, code=0)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out")} == before
    assert json.loads((tmp_path / "out" / "config.json").read_text())["_class_name"] == "ControlNetModel"
    assert {v.dtype for v in read_tensors(tmp_path / "out" / "diffusion_pytorch_model.safetensors")[0].values()} \
        == {torch.float16}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu", "nonsense"])
def test_a_missing_or_unknown_device_is_named_before_reading(tmp_path, device):
    from controlnet.assets import mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.errors import InputError

    with pytest.raises(InputError, match=device.split(":")[0]):
        load_controlnet(mini_controlnet_dir("edges"), device=device)
