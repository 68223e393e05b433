"""One models folder for every learned detector: a flag (--models-dir / --annotator-dir) or else
$CONTROLNET_ANNOTATOR_DIR; files flat or in sd-webui-controlnet's annotator/downloads/<name>/ layout;
a missing file named in one line (file, where to put it, where it is published). CLI, API, server."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from skimage import data

from bad_input_tools import assert_user_error, run_cli
from controlnet.annotators import annotate
from controlnet.annotators.local_models import ENV_VAR, find_weight, models_dir, weight_path
from controlnet.errors import MissingFileError

IMAGE = np.ascontiguousarray(data.coffee()[:96, :128])
EXT = "extensions/sd-webui-controlnet/annotator/downloads"
# where a file lands in each layout, relative to the folder given
LAYOUTS = {"flat": "{file}", "downloads": "{sub}/{file}", "extension": "annotator/downloads/{sub}/{file}",
           "a1111 root": EXT + "/{sub}/{file}"}


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    from controlnet.annotators.hed_network import ControlNetHED

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hed") / "ControlNetHED.pth"
    torch.save(ControlNetHED().state_dict(), path)
    return path


def place(folder, layout: str, source, sub: str = "hed"):
    """Link `source` into `folder` the way `layout` keeps it; the path it got."""
    path = folder / LAYOUTS[layout].format(sub=sub, file=source.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, path)
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("file,sub", [("ControlNetHED.pth", "hed"), ("sk_model.pth", "lineart"),
                                      ("table5_pidinet.pth", "pidinet"), ("mlsd_large_512_fp32.pth", "mlsd"),
                                      ("body_pose_model.pth", "openpose"), ("scannet.pt", "normal_bae"),
                                      ("ZoeD_M12_N.pt", "zoedepth"), ("res101.pth", "leres"),
                                      ("upernet_global_small.pth", "uniformer")])
def test_each_layout_is_found(tmp_path, layout, file, sub):
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / file
    source.write_bytes(b"x")
    models = tmp_path / "models"
    models.mkdir()
    assert find_weight(file, models) is None
    got = place(models, layout, source, sub)
    assert find_weight(file, models) == got.resolve()


def test_the_flag_wins_over_the_environment_variable(tmp_path, monkeypatch, hed_file):
    env, flag = tmp_path / "env", tmp_path / "flag"
    env.mkdir(), flag.mkdir()
    in_env, in_flag = place(env, "flat", hed_file), place(flag, "downloads", hed_file)
    assert models_dir(None) is None
    monkeypatch.setenv(ENV_VAR, str(env))
    assert models_dir(None) == env.resolve()
    assert weight_path("ControlNetHED.pth", "HED") == in_env.resolve()
    assert weight_path("ControlNetHED.pth", "HED", flag) == in_flag.resolve()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nothing"))
    with pytest.raises(MissingFileError, match=f"\\${ENV_VAR} .*nothing is not a folder"):
        models_dir(None)
    with pytest.raises(MissingFileError, match="--models-dir.*not a folder"):
        models_dir(hed_file)


def test_missing_file_is_one_line_naming_file_place_and_source(tmp_path):
    with pytest.raises(MissingFileError) as err:
        annotate("softedge_hed", IMAGE, models_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for part in ("softedge_hed needs ControlNetHED.pth", str(tmp_path), "hed/ subfolder",
                 "huggingface.co/lllyasviel/Annotators", "nothing is downloaded"):
        assert part in message, message
    with pytest.raises(MissingFileError, match=f"--models-dir DIR .*\\${ENV_VAR}.*model="):
        annotate("lineart_coarse", IMAGE)  # no folder anywhere: says how to give one, or the file itself
    with pytest.raises(MissingFileError, match="sk_model2.pth.*lineart/ subfolder"):
        annotate("lineart_coarse", IMAGE, model=tmp_path)  # a folder given as model: the same search


def test_api_reads_weights_from_the_models_folder(tmp_path, hed_file, monkeypatch):
    expected = annotate("softedge_hed", IMAGE, resolution=64, model=hed_file)
    place(tmp_path, "a1111 root", hed_file)
    assert np.array_equal(annotate("softedge_hed", IMAGE, resolution=64, models_dir=tmp_path), expected)
    assert np.array_equal(annotate("scribble_hed", IMAGE, resolution=64, models_dir=tmp_path),
                          annotate("scribble_hed", IMAGE, resolution=64, model=hed_file))
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert np.array_equal(annotate("softedge_hed", IMAGE, resolution=64), expected)
    with pytest.raises(MissingFileError, match="not_there"):  # a model given explicitly wins over the folder
        annotate("softedge_hed", IMAGE, resolution=64, model=tmp_path / "not_there.pth")


def test_mlsd_runs_the_network_when_its_file_is_in_the_folder(tmp_path, monkeypatch):
    from controlnet.annotators import lines

    source = tmp_path / "mlsd_large_512_fp32.pth"
    source.write_bytes(b"x")
    models = tmp_path / "models"
    got = place(models, "downloads", source, "mlsd")
    seen = []
    monkeypatch.setattr(lines, "mlsd_raw", lambda image, weights: seen.append(weights) or np.zeros((9, 32, 32)))
    square = np.ascontiguousarray(IMAGE[:64, :64])
    annotate("mlsd", square, resolution=64, models_dir=models)
    assert seen == [str(got.resolve())]
    annotate("mlsd", square, resolution=64)  # no folder: OpenCV LSD stands in, the network is not called
    assert len(seen) == 1


def test_cli_flag_alias_and_environment_variable(tmp_path, hed_file, capsys, monkeypatch):
    from PIL import Image

    Image.fromarray(IMAGE).save(tmp_path / "in.png")
    models = tmp_path / "models"
    place(models, "downloads", hed_file)
    expected = annotate("softedge_hed", IMAGE, resolution=64, model=hed_file)
    for i, how in enumerate((["--models-dir", models], ["--annotator-dir", models], [])):
        if not how:
            monkeypatch.setenv(ENV_VAR, str(models))
        out = tmp_path / f"out{i}.png"
        code, _, err = run_cli(["annotate", "softedge_hed", tmp_path / "in.png", "-o", out, "--resolution", "64", *how],
                               capsys)
        assert code == 0, err
        assert np.array_equal(np.array(Image.open(out)), expected)
    monkeypatch.delenv(ENV_VAR)
    message = assert_user_error(["annotate", "lineart", tmp_path / "in.png", "-o", tmp_path / "x.png",
                                 "--models-dir", models], capsys, "sk_model.pth", str(models), "lineart/",
                                "lllyasviel/Annotators")
    assert len(message.strip().splitlines()) == 1
    assert_user_error(["annotate", "softedge_hed", tmp_path / "in.png", "-o", tmp_path / "x.png",
                       "--models-dir", tmp_path / "none"], capsys, "not a folder")
    assert not (tmp_path / "x.png").exists()


def test_server_lists_only_detectors_whose_weights_are_found(tmp_path, hed_file, monkeypatch):
    from controlnet.web import modules

    models = tmp_path / "models"
    place(models, "a1111 root", hed_file)
    listed = modules.module_list(models)["module_list"]
    assert {"softedge_hed", "scribble_hed"} <= set(listed)
    assert not {"lineart_realistic", "softedge_pidinet", "depth", "seg_ade20k"} & set(listed)
    assert modules.weights_path("softedge_hed", models) == (models / EXT / "hed" / "ControlNetHED.pth").resolve()
    with pytest.raises(Exception, match="needs weights: put .*table5_pidinet.pth.*its pidinet/ subfolder"):
        modules.resolve("module", "softedge_pidinet", models)
    monkeypatch.setenv(ENV_VAR, str(models))  # the server's folder when --annotator-dir is not given
    assert "softedge_hed" in modules.module_list(models_dir(None))["module_list"]
