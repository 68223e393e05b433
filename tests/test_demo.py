"""`controlnet demo` and the built-in model names, on a random miniature model of the real layout."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from controlnet.assets import MINI_CONDITIONS, available_controlnets, resolve_controlnet, resolve_model
from controlnet.cli import main
from controlnet.errors import MissingFileError


def random_mini(folder: Path) -> Path:
    """The miniature model's folder layout with random tiny weights and one ControlNet per condition."""
    import torch

    from controlnet.checkpoints import save_controlnet
    from controlnet.mini.config import MiniConfig
    from controlnet.mini.models import build_text_encoder, build_unet, build_vae
    from controlnet.mini.pipeline import assemble, save
    from controlnet.mini.tokenizer import build_tokenizer
    from controlnet.nn import ControlNet
    from controlnet.tiny import randomize_connections

    torch.manual_seed(0)
    mini_config = MiniConfig.tiny()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp, mini_config.max_length)
    unet = build_unet(mini_config)
    save(assemble(build_vae(mini_config), build_text_encoder(mini_config, tokenizer), tokenizer, unet), folder, fp16=False)
    for k, condition in enumerate(MINI_CONDITIONS):
        cn = ControlNet.from_unet(unet, vae_scale_factor=8)
        randomize_connections(cn, seed=k, std=0.5)
        save_controlnet(cn, folder / f"controlnet-{condition}")
    return folder


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return random_mini(tmp_path_factory.mktemp("mini") / "mini")


def test_demo_writes_the_grid_of_every_controlnet(mini, tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--model", str(mini), "-o", str(out), "--steps", "2", "--samples", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out)
    grid = np.asarray(Image.open(out))
    cell = 4 * 64 + 4 * 2  # 64-px pictures upscaled 4x, 2-px gaps upscaled too
    assert grid.shape[0] == len(MINI_CONDITIONS) * 2 * cell - 4 * 2 and grid.shape[1] == 4 * cell - 4 * 2
    left, plain, controlled, outlined = (grid[: 4 * 64, j * cell: j * cell + 4 * 64].astype(int) for j in range(4))
    assert (left.max(axis=2) > 0).any()  # a condition map is shown
    assert np.abs(plain - controlled).mean() > 1  # the (random) ControlNet changes the picture
    drawn = (outlined != controlled).any(axis=2)  # the outline column: the controlled picture, lines drawn over it
    lines = left.max(axis=2) > 127  # the edges condition, upscaled 4x
    assert drawn.any() and not (drawn & ~lines).any()  # drawn only where the condition has a line


def test_demo_in_parallel_processes_draws_the_same_grid(mini, tmp_path):
    """--jobs 2 forks two workers that share the rows (Linux); the grid is byte for byte the serial one."""
    grids = []
    for jobs in ("1", "2"):
        out = tmp_path / f"demo-{jobs}.png"
        assert main(["demo", "--model", str(mini), "-o", str(out), "--steps", "2", "--samples", "1", "--quiet",
                     "--jobs", jobs]) == 0
        grids.append(np.asarray(Image.open(out)))
    assert np.array_equal(*grids)


def test_generate_accepts_a_users_condition_with_preprocess(mini, tmp_path):
    drawing = np.zeros((64, 64, 3), np.uint8)
    drawing[16:48, 16:48] = 255  # a hand-drawn square
    Image.fromarray(drawing).save(tmp_path / "square.png")
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(mini), "--controlnet", str(mini / "controlnet-edges"),
                 "--image", str(tmp_path / "square.png"), "--preprocess", "canny", "--prompt", "a red square",
                 "--steps", "2", "--seed", "3", "-o", str(out)]) == 0
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 1
    params = json.loads(Image.open(pngs[0]).text["controlnet"])
    assert params["units"][0]["preprocess"] == "canny"


def test_built_in_names_resolve_or_say_how_to_get_them(mini):
    assert available_controlnets(mini) == list(MINI_CONDITIONS)
    assert resolve_model("some/folder") == Path("some/folder")
    assert resolve_controlnet("cn.safetensors") == Path("cn.safetensors")
    try:
        path = resolve_model("mini")
    except MissingFileError as exc:
        assert "build-mini" in str(exc)
    else:
        assert (path / "model_index.json").is_file()
    with pytest.raises(MissingFileError, match="built-in"):
        resolve_controlnet("mini:normals")


def test_mini_world_metrics_score_the_true_picture_high_and_a_shuffled_one_low():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mini_world", Path(__file__).parents[1] / "benchmarks" / "mini_world.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from controlnet.metrics.world import label_scores, order_errors
    from controlnet.world.world import World

    samples = [s for s in World(seed=1, size=64, textured=0.0).take(40) if len(s.scene.shapes) > 1][:12]
    rng = np.random.default_rng(0)
    true_acc, true_f1, wrong, judged, shuffled_acc, shuffled_f1 = [], [], 0, 0, [], []
    for s in samples:
        true_acc.append(label_scores(s.image, s)[0])
        true_f1.append(bench.edge_score(s.image, s.conditions["edges"]))
        w, j = order_errors(s.image, s)
        wrong, judged = wrong + w, judged + j
        shuffled = np.roll(s.image, (rng.integers(16, 48), rng.integers(16, 48)), axis=(0, 1))
        shuffled_acc.append(label_scores(shuffled, s)[0])
        shuffled_f1.append(bench.edge_score(shuffled, s.conditions["edges"]))
    assert np.mean(true_acc) > 0.97 and np.mean(true_f1) > 0.8
    assert judged > 0 and wrong == 0  # the renderer draws later shapes in front
    assert np.mean(shuffled_acc) < np.mean(true_acc) - 0.1 and np.mean(shuffled_f1) < 0.5


def test_controlnet_stage_trains_saves_fp16_and_resumes(tmp_path):
    import torch

    from controlnet.checkpoints import load_controlnet
    from controlnet.mini.controlnet_stage import train_controlnet

    model = random_mini(tmp_path / "mini")
    before = load_controlnet(model / "controlnet-seg").state_dict()
    report = train_controlnet(model, tmp_path / "work", "seg", budget_s=6, samples=24, batch_size=4,
                              calibration_steps=3, progress=False)
    assert report["steps"] > 3 and report["path"] == str(model / "controlnet-seg")
    trained = load_controlnet(model / "controlnet-seg")
    assert trained.loaded_from["dtype"] == torch.float16  # stored in fp16; loaded in float32 (issue 10)
    assert any(not torch.equal(trained.state_dict()[k].float(), v.float()) for k, v in before.items())
    again = train_controlnet(model, tmp_path / "work", "seg", budget_s=6, samples=24, batch_size=4,
                             calibration_steps=3, progress=False)
    assert again == report  # a finished stage is not trained again


def _built_in_or_skip():
    from controlnet.assets import MINI_DIR, available_controlnets

    if not (MINI_DIR / "model_index.json").is_file() or "edges" not in available_controlnets():
        pytest.skip("the built-in miniature weights are not in this checkout")
    return MINI_DIR


def test_the_readme_demo_runs_on_the_built_in_weights(tmp_path, capsys):
    _built_in_or_skip()
    out = tmp_path / "demo.png"
    assert main(["demo", "-o", str(out), "--quiet"]) == 0  # the README's main command, default settings
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    grid = np.asarray(Image.open(out))
    cell = 4 * 64 + 4 * 2
    assert grid.shape[1] == 4 * cell - 4 * 2 and grid.shape[0] % cell == cell - 4 * 2


def test_built_in_weights_load_and_follow_their_condition():
    """The committed miniature model (when this installation has it): the edges ControlNet must make
    canny edges line up with the condition clearly better than the same prompts and seeds without it."""
    mini_dir = _built_in_or_skip()
    import importlib.util

    spec = importlib.util.spec_from_file_location("mini_world", Path(__file__).parents[1] / "benchmarks" / "mini_world.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from controlnet.checkpoints import load_controlnet
    from controlnet.pipeline import ControlPipeline
    from controlnet.world.world import World

    pipe = ControlPipeline.from_pretrained(mini_dir)
    samples = list(World(seed=1, size=64).take(8, start=30_000))
    cn = load_controlnet(mini_dir / "controlnet-edges")
    controlled, _ = bench.generate(pipe, samples, unit=(cn, "edges"), steps=10)
    plain, _ = bench.generate(pipe, samples, steps=10)
    f1 = np.mean([bench.edge_score(img, s.conditions["edges"]) for img, s in zip(controlled, samples)])
    f1_plain = np.mean([bench.edge_score(img, s.conditions["edges"]) for img, s in zip(plain, samples)])
    assert f1 > 0.3 and f1 > 2 * f1_plain
