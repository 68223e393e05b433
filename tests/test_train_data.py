"""Every data layout loads; bad samples are skipped and counted; the global order shards exactly."""

import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from controlnet.training import (
    GlobalBatches,
    PairDataset,
    Processing,
    WebDatasetPairs,
    detect_format,
    make_fill50k,
    open_sources,
)
from controlnet.training.data import stream_batches
from controlnet.training.toy import circle_pair

RES = 16


def png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def pairs(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [circle_pair(size, rng) for _ in range(n)]


def read_all(dataset):
    """Every index once; returns (samples, skipped indices)."""
    samples, skipped = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(dataset)):
            s = dataset[i]
            skipped |= {j for j, _ in s["skipped"]}
            samples.append(s)
    return samples, skipped


def check_sample(s):
    assert s["image"].shape == (3, RES, RES) and s["hint"].shape == (3, RES, RES)
    assert -1.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert 0.0 <= s["hint"].min() and s["hint"].max() <= 1.0
    assert isinstance(s["prompt"], str) and "circle" in s["prompt"]


def test_fill50k(tmp_path):
    root = make_fill50k(tmp_path / "fill", n=6, size=32)
    assert detect_format([str(root)]) == "fill50k"
    ds = PairDataset(open_sources([str(root)], "fill50k"), Processing(RES))
    samples, skipped = read_all(ds)
    assert len(samples) == 6 and not skipped
    for s in samples:
        check_sample(s)
    # hint: white outline on black; target: filled, so it has more "ink" than the outline
    assert samples[0]["hint"].mean() < 0.5


def test_image_folder_with_custom_columns_and_bad_samples(tmp_path):
    root = tmp_path / "folder"
    (root / "img").mkdir(parents=True)
    rows = []
    for i, (cond, target, prompt) in enumerate(pairs(6)):
        Image.fromarray(target).save(root / "img" / f"t{i}.png")
        Image.fromarray(cond).save(root / "img" / f"c{i}.png")
        rows.append({"file_name": f"img/t{i}.png", "edges": f"img/c{i}.png", "caption": prompt})
    (root / "img" / "t1.png").write_bytes(b"not a png")  # unreadable
    del rows[2]["caption"]  # missing prompt
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(root / "img" / "c3.png")  # aspect mismatch
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    assert detect_format([str(root)]) == "folder"
    sources = open_sources([str(root)], "folder", image_column="image", conditioning_image_column="edges",
                           caption_column="caption")
    ds = PairDataset(sources, Processing(RES))
    samples, skipped = read_all(ds)
    assert skipped == {1, 2, 3, 6}
    assert len(samples) == 7  # bad ones are replaced by the next good sample, batches keep their shape
    for s in samples:
        check_sample(s)
        assert s["index"] not in skipped


def test_missing_condition_computed_by_annotator(tmp_path):
    pytest.importorskip("controlnet.annotators")
    root = tmp_path / "folder"
    root.mkdir()
    cond, target, prompt = pairs(1)[0]
    Image.fromarray(target).save(root / "t.png")
    (root / "metadata.jsonl").write_text(json.dumps({"image": "t.png", "text": prompt}) + "\n")
    without = PairDataset(open_sources([str(root)], "folder"), Processing(RES))
    with pytest.raises(Exception, match="none of 1 samples"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without[0]
    ds = PairDataset(open_sources([str(root)], "folder"), Processing(RES, annotator="canny"))
    s = ds[0]
    check_sample(s)
    assert s["hint"].max() == 1.0 and s["hint"].mean() < 0.5  # canny: white edges on black


def test_hf_datasets_on_disk_and_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = pairs(5)
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(t) for _, t, _ in data], "conditioning_image": [Image.fromarray(c) for c, _, _ in data],
         "text": [p for _, _, p in data]},
        features=datasets.Features({"image": datasets.Image(), "conditioning_image": datasets.Image(),
                                    "text": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "disk"))
    ds.to_parquet(str(tmp_path / "pq" / "train-0.parquet"))
    for paths, fmt in (([str(tmp_path / "disk")], "hf"), ([str(tmp_path / "pq" / "train-0.parquet")], "parquet")):
        assert detect_format(paths) == fmt
        pd = PairDataset(open_sources(paths, fmt), Processing(RES))
        samples, skipped = read_all(pd)
        assert len(samples) == 5 and not skipped
        for s, (_, _, prompt) in zip(samples, data):
            check_sample(s)
            assert s["prompt"] == prompt


def write_shard(path, items):
    with tarfile.open(path, "w") as tar:
        for key, files in items:
            for ext, payload in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def test_webdataset_shards_streamed_with_bad_samples(tmp_path):
    data = pairs(8)
    items = [(f"{i:04d}", {"png": png(t), "cond.png": png(c), "txt": p.encode()}) for i, (c, t, p) in enumerate(data)]
    items[2][1]["png"] = b"\x89PNG broken"  # unreadable target
    del items[5][1]["txt"]  # missing prompt
    write_shard(tmp_path / "shard-000.tar", items[:4])
    write_shard(tmp_path / "shard-001.tar", items[4:])
    urls = [str(tmp_path / "shard-{000..001}.tar")]
    assert detect_format(urls) == "webdataset"
    stream = WebDatasetPairs(urls, Processing(RES), epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(stream_batches(iter(stream), 2))
    assert len(batches) == 3  # 6 good samples -> 3 batches of 2; bad ones are reported with the next batch
    skipped = [k for b in batches for k, _ in b["skipped"]]
    assert sorted(skipped) == ["0002", "0005"]
    assert batches[0]["image"].shape == (2, 3, RES, RES)
    assert batches[0]["key"][0] != batches[1]["key"][0]
    # two processes split the two shards between them, together seeing every good sample once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [[s["key"] for s in WebDatasetPairs(urls, Processing(RES), rank=r, world=2, epochs=1) if "bad" not in s]
                 for r in range(2)]
    assert len(parts[0]) == 3 and len(parts[1]) == 3 and not set(parts[0]) & set(parts[1])
    # resumption skips what was consumed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rest = [s["key"] for s in WebDatasetPairs(urls, Processing(RES), skip=3, epochs=1) if "bad" not in s]
    assert rest == (parts[0] + parts[1])[3:]


def test_global_batches_shard_and_resume_exactly():
    one = GlobalBatches(10, 4, seed=3)
    two = [GlobalBatches(10, 2, rank=r, world=2, seed=3) for r in range(2)]
    for g in range(6):  # crosses epoch boundaries (10 is not a multiple of 4)
        assert one.batch_at(g) == two[0].batch_at(g) + two[1].batch_at(g)
    # each epoch is a permutation
    stream = [i for g in range(5) for i, e in one.batch_at(g) if e == 0]
    assert sorted(stream) == list(range(10))
    resumed = iter(GlobalBatches(10, 4, seed=3, start=3))
    assert next(resumed) == one.batch_at(3)
    assert GlobalBatches(10, 4, seed=4).batch_at(0) != one.batch_at(0)


def test_empty_prompt_drop_rate():
    from controlnet.training.step import draw, drop_prompts

    drops = torch.cat([draw(0, m, 64, slice(None), (4, 2, 2), 1000, 0.5).drop_prompt for m in range(50)])
    assert abs(drops.float().mean().item() - 0.5) < 0.03  # 3200 draws: 5 standard deviations
    d = draw(0, 0, 8, slice(None), (4, 2, 2), 1000, 0.5)
    dropped = drop_prompts([f"p{i}" for i in range(8)], d.drop_prompt)
    assert [p == "" for p in dropped] == d.drop_prompt.tolist()
    # a process's share is the slice of the global draw
    assert torch.equal(draw(0, 5, 8, slice(4, 8), (4, 2, 2), 1000, 0.5).noise, draw(0, 5, 8, slice(None), (4, 2, 2), 1000, 0.5).noise[4:])
    assert not draw(0, 0, 8, slice(None), (4, 2, 2), 1000, 0.0).drop_prompt.any()
