"""CLIP aesthetic score from a local head file (the LAION improved-aesthetic-predictor layout) over a
tiny random CLIP built from a config (no real weights exist offline), end to end and bad inputs."""

import json

import numpy as np
import pytest
import torch

from bad_input_tools import assert_user_error, run_cli, unchanged

PROJECTION = 16


def laion_mlp(width: int = PROJECTION) -> torch.nn.Sequential:
    """The predictor's layout (improved-aesthetic-predictor, `MLP.layers`), narrower: no activations."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 16),
                               torch.nn.Dropout(0.2), torch.nn.Linear(16, 8), torch.nn.Dropout(0.1),
                               torch.nn.Linear(8, 4), torch.nn.Linear(4, 1)).eval()


class Head(torch.nn.Module):
    def __init__(self, width: int = PROJECTION):
        super().__init__()
        self.layers = laion_mlp(width)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from controlnet.offline_tokenizer import offline_clip_tokenizer
    from controlnet.tiny import clip_text_config, tiny_text_kwargs

    folder = tmp_path_factory.mktemp("clip")
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    config = CLIPConfig(text_config=clip_text_config(**tiny_text_kwargs(32)).to_dict(), vision_config=vision,
                        projection_dim=PROJECTION)
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(folder)
    offline_clip_tokenizer(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("head") / "aesthetic.pth"
    torch.save(Head().state_dict(), path)
    return path


def test_scores_equal_the_predictor_module_on_normalised_clip_embeddings(clip_folder, head_file, tmp_path):
    from safetensors.torch import save_file

    from controlnet.evaluation.aesthetic import aesthetic_scores, load_head
    from controlnet.evaluation.clip_score import _tensor, load_clip

    clip = load_clip(clip_folder)
    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    pixels = clip[1](images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        emb = _tensor(clip[0].get_image_features(pixel_values=pixels))
        expected = Head().layers(emb / emb.norm(dim=-1, keepdim=True))[:, 0].numpy()
    ours = aesthetic_scores(images, load_head(head_file), clip)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    save_file({k: v.contiguous() for k, v in Head().state_dict().items()}, tmp_path / "head.safetensors")
    np.testing.assert_allclose(aesthetic_scores(images, load_head(tmp_path / "head.safetensors"), clip), ours)


def test_evaluate_reports_the_aesthetic_score(clip_folder, head_file, tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "--model", "mini", "--steps", "2", "--no-fid", "--no-uncontrolled",
                            "--controlnet", "mini:edges", "--data", "world:edges", "--n", "2", "--grid-samples", "1",
                            "--clip", clip_folder, "--aesthetic", head_file, "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    metrics = {r["metric"]: r for r in data["records"]}
    assert metrics["aesthetic"]["n"] == 2 and np.isfinite(metrics["aesthetic"]["value"])
    assert metrics["clip_score"]["n"] == 2
    assert "aesthetic" not in data["not_computed"] and "clip_score" not in data["not_computed"]


def _saved(tmp_path, state, name="bad.pth"):
    torch.save(state, tmp_path / name)
    return tmp_path / name


BAD = [
    (lambda t: t / "nothing.pth", "no such file"),
    (lambda t: (t / "junk.pth").write_bytes(b"junk") and t / "junk.pth", "not a state dict file"),
    (lambda t: _saved(t, {"w": torch.zeros(2)}), "layers.K.weight"),
    (lambda t: _saved(t, Head(width=768).state_dict()), "768-d"),
    (lambda t: _saved(t, {"layers.0.weight": torch.zeros(8, PROJECTION), "layers.0.bias": torch.zeros(8),
                          "layers.1.weight": torch.zeros(1, 5), "layers.1.bias": torch.zeros(1)}), "do not chain"),
    (lambda t: _saved(t, {"layers.0.weight": torch.zeros(2, PROJECTION), "layers.0.bias": torch.zeros(2)}), "2 outputs"),
]


@pytest.mark.parametrize("make,fragment", BAD, ids=["missing", "junk", "foreign keys", "wrong width", "no chain",
                                                    "two outputs"])
def test_bad_aesthetic_head_is_one_clear_line_and_writes_nothing(make, fragment, clip_folder, tmp_path, capsys):
    head = make(tmp_path)
    with unchanged(tmp_path):
        assert_user_error(["evaluate", "--model", "mini", "--no-fid", "--n", "2", "--clip", clip_folder,
                           "--aesthetic", head, "-o", tmp_path / "o"], capsys, "--aesthetic", fragment)


def test_aesthetic_needs_clip(head_file, tmp_path, capsys):
    with unchanged(tmp_path):
        assert_user_error(["evaluate", "--model", "mini", "--no-fid", "--aesthetic", head_file, "-o", tmp_path / "o"],
                          capsys, "--aesthetic needs --clip")
