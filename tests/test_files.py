"""The one atomic writer: the old file survives any failure, no partial file remains, and the
error names the user's file (not our temporary one)."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from bad_input_tools import full_disk, read_only, unchanged
from controlnet.errors import InputError
from controlnet.files import atomic_file, save_image, writable_file, writable_folder, write_json

NOISE = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)


def test_a_full_disk_leaves_the_old_file_and_names_it(tmp_path):
    out = tmp_path / "picture.png"
    save_image(np.zeros((8, 8, 3), np.uint8), out)
    with unchanged(tmp_path), full_disk(1024), pytest.raises(OSError) as info:
        save_image(NOISE, out)
    assert info.value.errno in (errno.EFBIG, errno.ENOSPC)
    assert info.value.filename == str(out)


def test_a_failing_writer_leaves_nothing_behind(tmp_path):
    (tmp_path / "data.json").write_text('{"kept": true}\n')
    with unchanged(tmp_path), pytest.raises(RuntimeError), atomic_file(tmp_path / "data.json") as tmp:
        tmp.write_text('{"half')
        raise RuntimeError("the writer failed")


def test_rgba_as_jpeg_is_refused_before_the_file_is_touched(tmp_path):
    save_image(NOISE, tmp_path / "mine.jpg")
    with unchanged(tmp_path), pytest.raises(InputError, match="RGBA.*JPEG"):
        save_image(np.zeros((8, 8, 4), np.uint8), tmp_path / "mine.jpg")


@pytest.mark.parametrize("name", ["out.gif2", "out", "out.txt"])
def test_unknown_image_suffixes_are_named(tmp_path, name):
    with pytest.raises(InputError, match="unknown image suffix"):
        writable_file(tmp_path / name, image=True)


def test_output_places_are_checked(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        writable_folder(tmp_path / "a-file")
    with pytest.raises(InputError, match="is a folder"):
        writable_file(tmp_path)
    with pytest.raises(InputError, match="already exists"):
        writable_file(tmp_path / "a-file", overwrite=False)
    with pytest.raises(InputError, match="is a folder"):
        write_json(tmp_path, {"x": 1})


def test_a_read_only_folder_is_named_before_work(tmp_path):
    with read_only(tmp_path / "locked") as locked, pytest.raises(InputError, match="not writable"):
        writable_folder(locked / "inside")
