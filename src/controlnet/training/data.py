"""Training pairs (target image, condition image, prompt) from the layouts people actually have.

- fill50k: `prompt.json` lines `{"source": ..., "target": ..., "prompt": ...}` (original tutorial);
- an image folder with `metadata.jsonl` (diffusers' column names, configurable), whose condition
  column is a path that *is* decoded (diffusers' `--train_data_dir` leaves it a string);
- a Hugging Face `datasets` folder (`save_to_disk`) or parquet files;
- WebDataset `.tar` shards, streamed (local paths, `pipe:` commands or URLs), for data larger than a disk.

A sample that cannot be used (unreadable image, target/condition aspect mismatch, missing prompt,
missing condition with no annotator) is skipped with a warning and counted, never fatal.
Map-style data is read in a fixed global order (one permutation per epoch, from the seed), and each
process takes its slice of every global batch: one process with batch 8 and two with batch 4 see
the same samples, and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from controlnet import images
from controlnet.errors import ControlNetError, InputError, MissingFileError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
# Keys tried in a WebDataset sample when the configured column is absent.
WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "image.png", "image.jpg", "target.png", "target.jpg")
WDS_COND_KEYS = ("cond.png", "cond.jpg", "conditioning_image.png", "conditioning_image.jpg", "hint.png",
                 "hint.jpg", "source.png", "source.jpg", "control.png", "control.jpg")
WDS_TEXT_KEYS = ("txt", "text", "caption", "prompt")


class BadSample(Exception):
    """A sample that cannot be trained on; the reason is the message."""


# ---------------------------------------------------------------- decoding


def decode_rgb(value, root: Path | None = None) -> np.ndarray:
    """H×W×3 uint8 RGB from a PIL image, array, encoded bytes, a `datasets` {bytes, path} dict or a path.

    Read by `controlnet.images.to_rgb8`, as sampling and the annotators read pictures (alpha on
    white, 16 bits scaled, the decompression-bomb guard); an unreadable picture is a `BadSample`.
    """
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (str, os.PathLike)) and root is not None and not Path(value).is_absolute():
        value = root / value
    try:
        return images.to_rgb8(value)
    except ControlNetError as exc:
        raise BadSample(str(exc)) from None


def decode_map(value, root: Path | None = None, inpaint: bool = False) -> np.ndarray:
    """A condition map as uint8: RGB as `decode_rgb` reads it (alpha is transparency, on white), but
    an inpaint map (`inpaint`) keeps its alpha as a 4th channel: 255 marks the pixels to repaint."""
    if not inpaint:
        return decode_rgb(value, root)
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (str, os.PathLike)) and root is not None and not Path(value).is_absolute():
        value = root / value
    try:
        arr = images.as_array(value)
    except ControlNetError as exc:
        raise BadSample(str(exc)) from None
    if arr.ndim != 3 or arr.shape[2] not in (2, 4):
        raise BadSample("the condition has no alpha channel, so nothing marks the pixels to repaint: with "
                        "--inpaint-maps every condition is an RGBA inpaint map (alpha 255 = repaint, as `controlnet "
                        "annotate inpaint` writes); for plain condition maps leave --inpaint-maps out")
    alpha = (images.to_float(arr[:, :, -1]) * 255.0).round().astype(np.uint8)  # grey or colour with alpha
    if not (alpha > 127).any():
        raise BadSample("the inpaint map's alpha marks no pixel to repaint (none above 127); make it with "
                        "`controlnet annotate inpaint` and a mask that is white where to repaint")
    return np.dstack([images.to_rgb8(arr[:, :, :-1]), alpha])


def hint_of(cond: np.ndarray) -> torch.Tensor:
    """3×H×W float hint of a uint8 map by the one rule, `annotators.map_to_hint`: in [0, 1], and -1
    where an inpaint map's alpha marks the pixels to repaint (control_v11p_sd15_inpaint)."""
    from controlnet.annotators.inpaint import map_to_hint

    return torch.from_numpy(map_to_hint(np.ascontiguousarray(cond))).permute(2, 0, 1)


def _resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size`, then centre crop: the one `crop_and_resize` geometry of
    `controlnet.images.fit`, with diffusers' training interpolation (Resize + CenterCrop)."""
    return images.fit(rgb, (size, size), "crop_and_resize", resize=_area_or_linear)


def _area_or_linear(x: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    import cv2

    shrink = size_wh[0] * size_wh[1] < x.shape[0] * x.shape[1]
    return cv2.resize(x, size_wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass
class Processing:
    """How a raw record becomes tensors; shared by every source."""

    resolution: int = 512
    annotator: str | None = None
    random_flip: bool = False
    seed: int = 0
    inpaint_maps: bool = False  # conditions are RGBA inpaint maps: alpha 255 = repaint (-1 in the hint)

    def __call__(self, record: dict, root: Path | None, epoch: int = 0) -> dict:
        if record.get("prompt") is None:
            raise BadSample("missing prompt")
        prompt = record["prompt"]
        if isinstance(prompt, (list, tuple)):  # several captions: one per epoch, reproducibly
            if not prompt:
                raise BadSample("missing prompt")
            prompt = prompt[_rng(self.seed, epoch, record["key"]).randrange(len(prompt))]
        if not isinstance(prompt, str):
            raise BadSample(f"prompt is a {type(prompt).__name__}, not text")
        target = decode_rgb(record.get("target"), root) if record.get("target") is not None else None
        if target is None:
            raise BadSample("missing target image")
        if record.get("condition") is None:
            if not self.annotator:
                raise BadSample("no condition image (pass --annotator NAME to compute it from the target)")
            from controlnet.annotators import annotate

            cond = annotate(self.annotator, target, resolution=min(self.resolution, min(target.shape[:2])))
        else:
            cond = decode_map(record["condition"], root, self.inpaint_maps)
        (th, tw), (ch, cw) = target.shape[:2], cond.shape[:2]
        if abs(th / tw - ch / cw) > 0.01 * th / tw:
            raise BadSample(f"target is {tw}x{th} but condition is {cw}x{ch} (different aspect ratio)")
        target, cond = _resize_crop(target, self.resolution), _resize_crop(cond, self.resolution)
        if self.random_flip and _rng(self.seed, epoch, record["key"]).random() < 0.5:
            target, cond = target[:, ::-1], cond[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(target)).permute(2, 0, 1).float() / 127.5 - 1.0
        hint = hint_of(cond)
        # content key for the latent cache: what the VAE will see, not the file name
        content = hashlib.blake2b(target.tobytes(), digest_size=16, person=b"cn-pixels").hexdigest()
        out = {"image": image, "hint": hint, "prompt": prompt, "key": content}
        if record.get("control_type") is not None:  # union training: the sample's condition kind
            out["control_type"] = record["control_type"]
        return out


def _rng(seed: int, epoch: int, key: str) -> random.Random:
    return random.Random(f"{seed}/{epoch}/{key}")


# ---------------------------------------------------------------- map-style sources


class RecordSource:
    """A list of raw records: `records[i]` = {target, condition, prompt, key} (images undecoded)."""

    root: Path | None = None
    name = "records"

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, i: int) -> dict:
        raise NotImplementedError

    def control_type(self, i: int):
        """Record i's `control_type` column (union training), without decoding its images."""
        return self.record(i).get("control_type")


class JsonLinesSource(RecordSource):
    """Records from a JSON-lines index file (one object per non-empty line), parsed lazily."""

    index_name = "index.jsonl"

    def _read_index(self, file: Path) -> None:
        self.lines = [ln for ln in file.read_text().splitlines() if ln.strip()]

    def __len__(self):
        return len(self.lines)

    def row(self, i: int) -> dict:
        try:
            return json.loads(self.lines[i])
        except json.JSONDecodeError as exc:
            raise BadSample(f"{self.index_name} line {i + 1} is not JSON ({exc.msg})") from None

    def control_type(self, i: int):
        try:
            return self.row(i).get("control_type")
        except (BadSample, AttributeError):
            return None


class Fill50k(JsonLinesSource):
    """The original tutorial layout: `prompt.json` (JSON lines) next to `source/` and `target/`."""

    name = "fill50k"
    index_name = "prompt.json"

    def __init__(self, path: str | Path):
        p = Path(path)
        file = p if p.is_file() else p / "prompt.json"
        if not file.is_file():
            raise MissingFileError(f"{p} has no prompt.json (fill50k layout: prompt.json, source/, target/)")
        self.root = file.parent
        self._read_index(file)

    def record(self, i):
        row = self.row(i)
        return {"target": row.get("target"), "condition": row.get("source"), "prompt": row.get("prompt"),
                "key": f"{i}:{row.get('target')}", "control_type": row.get("control_type")}


class ImageFolder(JsonLinesSource):
    """A folder with `metadata.jsonl`: image (or `file_name`), conditioning image and caption columns."""

    name = "folder"
    index_name = "metadata.jsonl"

    def __init__(self, path: str | Path, image_column="image", conditioning_image_column="conditioning_image",
                 caption_column="text"):
        self.root = Path(path)
        meta = self.root / "metadata.jsonl"
        if not meta.is_file():
            raise MissingFileError(f"{self.root} has no metadata.jsonl (one JSON object per line with "
                                   f"{image_column!r}, {conditioning_image_column!r}, {caption_column!r})")
        self._read_index(meta)
        self.columns = (image_column, conditioning_image_column, caption_column)

    def record(self, i):
        row = self.row(i)
        image_col, cond_col, text_col = self.columns
        target = row.get(image_col, row.get("file_name"))
        return {"target": target, "condition": row.get(cond_col), "prompt": row.get(text_col), "key": f"{i}:{target}",
                "control_type": row.get("control_type")}


class HFDataset(RecordSource):
    """A `datasets` folder written by `save_to_disk`, or parquet files; image columns decoded by us."""

    name = "hf"

    def __init__(self, paths: list[str], image_column="image", conditioning_image_column="conditioning_image",
                 caption_column="text", parquet: bool = False):
        try:
            import datasets
        except ImportError:
            raise InputError("reading datasets/parquet needs the `datasets` package: pip install 'controlnet-pytorch[train]'") from None
        if parquet:
            files = sorted(f for p in paths for f in (glob.glob(str(Path(p) / "**/*.parquet"), recursive=True)
                                                       if Path(p).is_dir() else glob.glob(p)))
            if not files:
                raise MissingFileError(f"no parquet files in {', '.join(paths)}")
            ds = datasets.load_dataset("parquet", data_files=files, split="train")
            self.name = "parquet"
        else:
            ds = datasets.load_from_disk(paths[0])
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise InputError(f"{paths[0]} has splits {list(ds)} but no 'train' split")
                ds = ds["train"]
        for col in (image_column, conditioning_image_column, caption_column):
            if col not in ds.column_names:
                if col == conditioning_image_column:
                    continue  # may be computed by an annotator
                raise InputError(f"the dataset has no column {col!r} (columns: {', '.join(ds.column_names)}); "
                                 "name yours with --image-column / --conditioning-image-column / --caption-column")
            if isinstance(ds.features[col], datasets.Image):
                ds = ds.cast_column(col, datasets.Image(decode=False))  # decode ourselves: bad files are skipped
        self.ds = ds
        self.columns = (image_column, conditioning_image_column, caption_column)
        self.root = Path(paths[0]) if Path(paths[0]).is_dir() else Path(paths[0]).parent

    def __len__(self):
        return len(self.ds)

    def record(self, i):
        row = self.ds[i]
        image_col, cond_col, text_col = self.columns
        return {"target": row.get(image_col), "condition": row.get(cond_col), "prompt": row.get(text_col), "key": str(i),
                "control_type": row.get("control_type")}

    def control_type(self, i: int):
        return self.ds[i].get("control_type") if "control_type" in self.ds.column_names else None


class PairDataset(torch.utils.data.Dataset):
    """Processed samples from one or more record sources; a bad sample is replaced by the next good one
    (so batches keep their shape and processes stay in step) and reported in `skipped`."""

    def __init__(self, sources: list[RecordSource], processing: Processing, max_samples: int | None = None):
        self.sources = sources
        self.processing = processing
        self.offsets = np.cumsum([0] + [len(s) for s in sources])
        self.n = int(self.offsets[-1]) if max_samples is None else min(int(self.offsets[-1]), max_samples)
        self.epoch = 0
        if self.n == 0:
            where = ", ".join(str(s.root or s.name) for s in sources)
            raise InputError(f"the training data has no pairs ({where}): its index lists no samples")

    def __len__(self):
        return self.n

    def load(self, i: int, epoch: int = 0) -> dict:
        """Sample i, or BadSample."""
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        source = self.sources[s]
        try:
            record = source.record(i - int(self.offsets[s]))
        except BadSample:
            raise
        except Exception as exc:
            raise BadSample(f"unreadable record ({type(exc).__name__}: {exc})") from None
        return self.processing(record, source.root, epoch)

    def control_type(self, i: int):
        """Sample i's control type (union training), read from its record without decoding images."""
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.sources[s].control_type(i - int(self.offsets[s]))

    def where(self, i: int) -> str:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return f"record {i - int(self.offsets[s])} of {self.sources[s].root or self.sources[s].name}"

    def __getitem__(self, item):
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        skipped = []
        for k in range(min(self.n, 1000)):
            j = (i + k) % self.n
            try:
                sample = self.load(j, epoch)
            except BadSample as exc:
                skipped.append((j, str(exc)))
                warnings.warn(f"skipping training sample {j}: {exc}", stacklevel=2)
                continue
            sample.update(index=j, skipped=skipped)
            return sample
        raise InputError(f"none of {min(self.n, 1000)} samples from {i} on could be read; the last problem: "
                         f"{skipped[-1][1]}")


class GlobalBatches(torch.utils.data.Sampler):
    """Per-process index lists for micro-batches `start, start+1, ...` of one global order.

    Position p of the global stream is sample `perm[p // n][p % n]` (a fresh permutation per epoch
    from the seed); micro-batch g holds positions g*B .. g*B+B-1 with B = batch * world, and process
    r takes its r-th slice. Nothing depends on the number of processes but the slicing.
    """

    def __init__(self, n: int, batch: int, rank: int = 0, world: int = 1, seed: int = 0, start: int = 0,
                 shuffle: bool = True):
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.seed, self.start, self.shuffle = seed, start, shuffle
        self._perm: tuple[int, torch.Tensor] | None = None

    def perm(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._perm = (epoch, torch.randperm(self.n, generator=g))
            else:
                self._perm = (epoch, torch.arange(self.n))
        return self._perm[1]

    def batch_at(self, g: int) -> list[tuple[int, int]]:
        big = self.batch * self.world
        first = g * big + self.rank * self.batch
        out = []
        for p in range(first, first + self.batch):
            epoch = p // self.n
            out.append((int(self.perm(epoch)[p % self.n]), epoch))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = self.start
        while True:
            yield self.batch_at(g)
            g += 1


# ---------------------------------------------------------------- WebDataset shards, streamed


class WebDatasetPairs(torch.utils.data.IterableDataset):
    """Samples streamed from `.tar` shards. Shards are split across processes (and loader workers)
    when there are enough of them, otherwise samples are; `skip` drops the first samples of this
    process's stream (resumption; exact with `num_workers=0`)."""

    name = "webdataset"

    def __init__(self, urls: list[str], processing: Processing, image_column="image",
                 conditioning_image_column="conditioning_image", caption_column="text",
                 rank: int = 0, world: int = 1, skip: int = 0, epochs: int | None = None):
        self.urls = _expand_urls(urls)
        self.processing = processing
        self.keys = (image_column, conditioning_image_column, caption_column)
        self.rank, self.world, self.skip, self.epochs = rank, world, skip, epochs

    def _split(self) -> tuple[list[str], int, int]:
        """(my shards, sample stride, sample offset) for this process and loader worker."""
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        parts, part = self.world * nw, self.rank * nw + wid
        if len(self.urls) >= parts:
            return self.urls[part::parts], 1, 0
        return self.urls, parts, part

    def _find(self, sample: dict, first: str, fallbacks) -> object:
        for key in (first, *fallbacks):
            if key in sample:
                return sample[key]
        return None

    def samples(self, epoch: int) -> Iterator[dict]:
        from webdataset.tariterators import tarfile_samples

        shards, stride, offset = self._split()
        stream_errors = []

        def handler(exc):
            stream_errors.append(exc)
            warnings.warn(f"skipping unreadable shard data: {exc}", stacklevel=2)
            return True

        raw = tarfile_samples(({"url": u} for u in shards), handler=handler)
        for k, s in enumerate(raw):
            if k % stride != offset:
                continue
            image_col, cond_col, text_col = self.keys
            text = self._find(s, text_col, WDS_TEXT_KEYS)
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            if text is None and "json" in s:
                try:
                    meta = json.loads(s["json"])
                    text = meta.get(text_col, meta.get("text", meta.get("caption", meta.get("prompt"))))
                except Exception:
                    text = None
            record = {"target": self._find(s, image_col, WDS_IMAGE_KEYS),
                      "condition": self._find(s, cond_col, WDS_COND_KEYS),
                      "prompt": text, "key": s.get("__key__", str(k)), "control_type": _wds_control_type(s)}
            try:
                sample = self.processing(record, None, epoch)
            except BadSample as exc:
                warnings.warn(f"skipping training sample {record['key']}: {exc}", stacklevel=2)
                yield {"bad": (record["key"], str(exc))}
                continue
            yield sample

    def __iter__(self):
        skip = self.skip // max(1, (torch.utils.data.get_worker_info() or _One).num_workers)
        epoch, seen = 0, 0
        while self.epochs is None or epoch < self.epochs:
            got = False
            for sample in self.samples(epoch):
                got = True
                if seen < skip:
                    seen += "bad" not in sample
                    continue
                yield sample
            if not got:
                raise InputError(f"the WebDataset shards {', '.join(self.urls[:3])} hold no samples")
            epoch += 1


class _One:
    num_workers = 1


def _wds_control_type(sample: dict):
    """A WebDataset sample's `control_type` entry, or the key of its .json (union training)."""
    value = sample.get("control_type")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    if value is None and "json" in sample:
        try:
            meta = json.loads(sample["json"])
            return meta.get("control_type") if isinstance(meta, dict) else None
        except ValueError:
            return None
    return value


def stream_batches(stream, batch: int) -> Iterator[dict]:
    """Group streamed samples into batches; bad ones are reported in the next batch's `skipped`."""
    items, skipped = [], []
    for sample in stream:
        if "bad" in sample:
            skipped.append(sample["bad"])
            continue
        items.append(sample)
        if len(items) == batch:
            out = collate(items)
            out["skipped"] = skipped
            yield out
            items, skipped = [], []


def _expand_urls(urls: list[str]) -> list[str]:
    out = []
    for u in urls:
        if u.startswith(("pipe:", "http://", "https://", "s3://", "gs://")):
            out.append(u)
        elif "{" in u:
            import braceexpand

            out += list(braceexpand.braceexpand(u))
        elif Path(u).is_dir():
            out += sorted(str(p) for p in Path(u).glob("*.tar"))
        else:
            out += sorted(glob.glob(u)) or [u]
    if not out:
        raise MissingFileError(f"no .tar shards found in {', '.join(urls)}")
    return out


# ---------------------------------------------------------------- batching and format detection


def collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "hint": torch.stack([s["hint"] for s in samples]),
        "prompt": [s["prompt"] for s in samples],
        "key": [s["key"] for s in samples],
        "index": [s.get("index", -1) for s in samples],
        "control_type": [s.get("control_type") for s in samples],
        "skipped": [x for s in samples for x in s.get("skipped", ())],
    }


def detect_format(paths: list[str]) -> str:
    """fill50k / folder / hf / parquet / webdataset, from what is on disk."""
    p0 = paths[0]
    if p0.startswith("pipe:") or any(x.endswith(".tar") or ".tar" in x and "{" in x for x in paths):
        return "webdataset"
    if any(x.endswith(".parquet") for x in paths):
        return "parquet"
    p = Path(p0)
    if p.name == "prompt.json" or (p / "prompt.json").is_file():
        return "fill50k"
    if (p / "metadata.jsonl").is_file():
        return "folder"
    if any((p / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return "hf"
    if p.is_dir() and any(p.glob("*.tar")):
        return "webdataset"
    if p.is_dir() and any(p.glob("**/*.parquet")):
        return "parquet"
    if not p.exists():
        raise MissingFileError(f"training data {p0} does not exist")
    raise InputError(f"cannot tell the format of {p0}: expected prompt.json (fill50k), metadata.jsonl (image folder), "
                     "a datasets folder, .parquet files or .tar shards; or pass --data-format")


def open_sources(paths: list[str], fmt: str, image_column="image", conditioning_image_column="conditioning_image",
                 caption_column="text") -> list[RecordSource]:
    """Map-style record sources for every format but webdataset."""
    cols = dict(image_column=image_column, conditioning_image_column=conditioning_image_column,
                caption_column=caption_column)
    if fmt == "fill50k":
        return [Fill50k(p) for p in paths]
    if fmt == "folder":
        return [ImageFolder(p, **cols) for p in paths]
    if fmt == "hf":
        return [HFDataset([p], **cols) for p in paths]
    if fmt == "parquet":
        return [HFDataset(paths, parquet=True, **cols)]
    raise InputError(f"unknown data format {fmt!r}")
