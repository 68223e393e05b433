"""`controlnet inspect / convert / transfer / example` as a user runs them."""

import json
import subprocess
import sys

import torch
from safetensors.torch import save_file

from controlnet import load_controlnet
from controlnet.checkpoints import ours_to_original, read_tensors
from controlnet.cli import main
from controlnet.tiny import tiny_unet


def test_example_inspect_convert_round_trip(tmp_path, capsys):
    src = tmp_path / "cn.safetensors"
    assert main(["example", str(src)]) == 0
    assert main(["inspect", str(src), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["layout"] == "original" and info["family"] == "sd1" and info["hint_channels"] == 3
    assert info["parameters"] == sum(v.numel() for v in read_tensors(src)[0].values())

    assert main(["convert", str(src), str(tmp_path / "d"), "--to", "diffusers", "--dtype", "fp16"]) == 0
    assert main(["convert", str(tmp_path / "d"), str(tmp_path / "back.safetensors"), "--to", "original"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "back.safetensors")]) == 0
    assert "float16" in capsys.readouterr().out
    original, back = read_tensors(src)[0], read_tensors(tmp_path / "back.safetensors")[0]
    assert original.keys() == back.keys()
    assert all(torch.equal(original[k].half(), back[k]) for k in original)


def test_convert_refuses_to_overwrite_and_bad_files_give_one_line(tmp_path, capsys):
    src = tmp_path / "cn.safetensors"
    main(["example", str(src)])
    capsys.readouterr()
    assert main(["convert", str(src), str(src), "--to", "original"]) == 2
    assert "exists" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    assert main(["inspect", str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("controlnet inspect: error:") and "junk.ckpt" in err and "\n" not in err


def test_transfer_command(tmp_path, capsys):
    main(["example", str(tmp_path / "cn.safetensors")])
    base = tiny_unet("sd1", exact=True)
    community = tiny_unet("sd1", exact=True, seed=1)
    base.save_pretrained(tmp_path / "base" / "unet")
    encoder = {k: v for k, v in community.state_dict().items() if k.split(".")[0] in ("conv_in", "time_embedding", "down_blocks", "mid_block")}
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in ours_to_original(encoder, 2).items()},
              str(tmp_path / "community.safetensors"))
    out = tmp_path / "moved.safetensors"
    assert main(["transfer", "--control", str(tmp_path / "cn.safetensors"), "--base", str(tmp_path / "base"),
                 "--community", str(tmp_path / "community.safetensors"), "-o", str(out)]) == 0
    moved = load_controlnet(out)
    assert torch.allclose(moved.conv_in.weight, load_controlnet(tmp_path / "cn.safetensors").conv_in.weight
                          + community.conv_in.weight - base.conv_in.weight)


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "controlnet", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "inspect" in result.stdout and "convert" in result.stdout


def test_help_does_not_import_torch():
    code = "import sys; from controlnet.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_example_families_match_the_tiny_models():
    from controlnet.cli.example import FAMILIES
    from controlnet.tiny import FAMILIES as TINY

    assert FAMILIES == TINY
