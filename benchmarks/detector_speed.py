"""CPU time of learned detectors per photo, ours against their references, measured in the same run.

    python benchmarks/detector_speed.py normal_bae --aux-python /tmp/auxenv/bin/python [--repeats 3] [--rounds 2]
    python benchmarks/detector_speed.py depth_midas --weights dpt_hybrid-midas-501f0c75.pt   # ours only, a real file
    python benchmarks/detector_speed.py --list

Both sides: one thread, the real-size network with random weights in the published layout (time does
not depend on the values; `DETECTORS` says who makes them: ours, or the reference's own classes where
ours has none), the same seeded photo, the median process time (one thread, so other jobs on a shared
machine do not count) of `--repeats` calls after one warm-up. The reference runs in its own
environment (`--aux-python`: it is not a dependency) as this same file with `--side aux`; the two
sides alternate for `--rounds` rounds and the medians over rounds are compared. Prints both times and
the ratio (ours / reference; ≤ 1.0 is the goal). Adding a detector is one `Detector` entry.

    python benchmarks/detector_speed.py normal_bae depth_leres --device cuda   # ours on a GPU against ours on the CPU

`--keep-freed-memory ours` times ours as the `controlnet` command runs (glibc keeps freed memory for the
next call: no page faults for big activations, see controlnet.memory) against the reference as its host
runs it; `both` gives the reference's process the same settings; the default leaves both as glibc sets them.

`--device DEV` times ours on DEV against ours on the CPU (all its threads) by the wall clock, the same
weights and photo, and prints the speed-up and a `RESULT {json}` line per detector (benchmarks/gpu_perf.py
reads them); detectors whose real-size file only the reference's classes make need `--weights` there.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(DATA))
DEPTH_ANYTHING_VITS = (384, 12, 64, (48, 96, 192, 384), 32)  # width, blocks, features, projections, head
OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
DWPOSE_FILES = (("yolox_l.onnx", "dwpose_yolox_tiny.onnx"), ("dw-ll_ucoco_384.onnx", "dwpose_rtmpose_tiny.onnx"))

Calls = Callable[..., Callable[[], object]]  # (folder, image[, ref_src]) -> one timed call


@dataclass(frozen=True)
class Detector:
    """One row of the table: `ours(folder, image)` and `reference(folder, image, ref_src)` return the call to time."""

    ours: Calls
    reference: Calls
    reference_name: str
    make_weights: Callable[[Path], None]  # random real-size weights in the published layout, into a folder
    weights_side: str = "ours"  # which environment runs make_weights ("aux": the reference's own classes)
    photo: str = "picture"  # "picture": seeded 512×768, detect resolution 512; "astronaut": skimage's, 512×512
    ref_src: str | None = None  # what --ref-src must be, where controlnet_aux lacks the reference


def annotate_call(name: str) -> Calls:
    def build(folder, image):
        from controlnet.annotators import annotate

        return lambda: annotate(name, image, resolution=512, model=folder)

    return build


def aux_call(module: str, cls: str, filename: str | None = None, eval_mode: bool = False, **options) -> Calls:
    """A controlnet_aux 0.0.10 detector at detect resolution 512."""

    def build(folder, image, ref_src=None):
        import importlib

        kind = getattr(importlib.import_module(f"controlnet_aux.{module}"), cls)
        detector = kind.from_pretrained(str(folder), **({"filename": filename} if filename else {}))
        if eval_mode:
            detector.model.eval()
        return lambda: detector(image, detect_resolution=512, output_type="np", **options)

    return build


def save_state(module: str, cls: str, filename: str, wrap: bool = False) -> Callable[[Path], None]:
    """Our own network's freshly initialised state under the published file name ({"model": …} where wrapped)."""

    def make(folder):
        import importlib

        import torch

        state = getattr(importlib.import_module(f"controlnet.annotators.{module}"), cls)().state_dict()
        torch.save({"model": state} if wrap else state, folder / filename)

    return make


def lineart_weights(folder):
    """Both lineart generators (controlnet_aux's LineartDetector loads sk_model.pth and sk_model2.pth together)."""
    for name in ("sk_model.pth", "sk_model2.pth"):
        save_state("lineart", "_build", name)(folder)


def pidinet_weights(folder):
    """Our PiDiNet's fresh state as published: under "state_dict", names prefixed by DataParallel's "module."."""
    import torch

    from controlnet.annotators.pidinet_network import PiDiNet

    torch.save({"state_dict": {f"module.{k}": v for k, v in PiDiNet().state_dict().items()}}, folder / "table5_pidinet.pth")


def midas_weights(folder):
    import torch
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    torch.save(model.state_dict(), folder / "dpt_hybrid-midas-501f0c75.pt")


def zoe_weights(folder):
    import torch
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    model = ZoeDepth.build_from_config(get_config("zoedepth", "infer"))
    torch.save({"model": model.state_dict()}, folder / "ZoeD_M12_N.pt")


def leres_weights(folder):
    """Our LeReS and merge networks, freshly initialised, in the published layouts (res101.pth under "depth_model")."""
    import torch

    from controlnet.annotators.leres_merge_network import MergeNet
    from controlnet.annotators.leres_network import LeresDepth

    torch.save({"depth_model": LeresDepth().state_dict()}, folder / "res101.pth")
    torch.save(MergeNet().state_dict(), folder / "latest_net_G.pth")


def depth_anything_weights(folder):
    import torch
    from depth_anything_inputs import original_shapes, random_depth_anything_state

    state = random_depth_anything_state(0, original_shapes(*DEPTH_ANYTHING_VITS))
    torch.save(state, folder / "depth_anything_v2_vits.pth")


def depth_anything_reference(folder, image, ref_src):
    sys.path.insert(0, ref_src)
    from custom_controlnet_aux.depth_anything_v2 import DepthAnythingV2Detector

    detector = DepthAnythingV2Detector.from_pretrained(str(folder), filename="depth_anything_v2_vits.pth")
    return lambda: detector(image, detect_resolution=512, output_type="np", max_depth=1.0)


def manga_line_reference(folder, image, ref_src):
    """sd-webui-controlnet's manga_line steps around the original `res_skip` (padding is a no-op at 512×768)."""
    import cv2
    import numpy as np
    import torch

    sys.path.insert(0, ref_src)
    from model_torch import res_skip

    net = res_skip()
    net.load_state_dict(torch.load(folder / "erika.pth"))
    net.eval()
    grey = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)).float()[None, None]

    def run():
        with torch.no_grad():
            return (255 - net(grey).numpy()[0, 0]).clip(0, 255).astype(np.uint8)

    return run


def dwpose_weights(folder):
    for name, source in DWPOSE_FILES:
        (folder / name).write_bytes((DATA / source).read_bytes())


def dwpose_ours(folder, image):
    from controlnet.annotators import annotate, dwpose

    def run():
        dwpose._LAST.clear()  # time a detection, not the cache
        return annotate("dw_openpose_full", image, resolution=512, model=folder)

    return run


def dwpose_reference(folder, image, ref_src):
    """A1111's ONNX pipeline, from tests/data/make_dwpose_reference.py's copy of a sd-webui-controlnet clone."""
    import make_dwpose_reference as reference

    code = Path(tempfile.mkdtemp(dir=folder))  # each round's process copies the code afresh
    wholebody, util, _, _ = reference.reference_package(ref_src, code)
    model = wholebody.Wholebody(*(str(folder / name) for name, _ in DWPOSE_FILES))
    return lambda: reference.draw_poses(util, model.format_result(model(image.copy())), *image.shape[:2])


def openpose_weights(folder):
    import torch

    from controlnet.annotators import openpose_network as n

    torch.manual_seed(0)
    for name, net in zip(OPENPOSE_FILES, (n.BodyPoseNet(), n.HandPoseNet(), n.FaceNet())):
        torch.save(net.state_dict(), folder / name)

def uniformer_weights(folder):
    """Our full-size UniFormer UperNet, freshly initialised, under mmseg's names in the mmcv checkpoint layout."""
    import torch
    from uniformer_inputs import original_name, published_layout

    from controlnet.annotators.uniformer_network import UniFormerUperNet

    state = {original_name(k): v for k, v in UniFormerUperNet().state_dict().items()}
    torch.save(published_layout(state), folder / "upernet_global_small.pth")


def uniformer_reference(folder, image, ref_src):
    """A1111's processor steps around sd-webui-controlnet's apply_uniformer (make_uniformer_reference.py's shims)."""
    import make_uniformer_reference as reference

    mmcv, _, init_segmentor, inference_segmentor, show_result_pyplot, get_palette, config = \
        reference.reference_package(ref_src)
    model = init_segmentor(str(config), str(folder / "upernet_global_small.pth"), device="cpu")

    def run():
        padded, remove_pad = reference.resize_image_with_pad(image, 512)
        result = inference_segmentor(model, padded)
        return remove_pad(show_result_pyplot(model, padded, result, get_palette("ade"), opacity=1))

    return run


# one standing person, arms out, normalised (x, y), COCO-18 order; the limbs and their PAF channels
PERSON = [[0.50, 0.12], [0.50, 0.26], [0.38, 0.26], [0.26, 0.40], [0.18, 0.54], [0.62, 0.26], [0.74, 0.40],
          [0.82, 0.54], [0.44, 0.56], [0.43, 0.75], [0.43, 0.94], [0.56, 0.56], [0.57, 0.75], [0.57, 0.94],
          [0.47, 0.09], [0.53, 0.09], [0.44, 0.11], [0.56, 0.11]]
LINKS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17)]
PAF_X = [12, 20, 14, 16, 22, 24, 0, 2, 4, 6, 8, 10, 28, 30, 34, 32, 36, 18, 26]


@functools.cache
def one_person_class():
    """Stands in for the body network: PAFs and heatmaps of PERSON on the input's 1/8 grid (the same on both sides)."""
    import numpy as np
    import torch

    class OnePerson(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            h, w = x.shape[2] // 8, x.shape[3] // 8
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
            heat, pafs = np.zeros((19, h, w), np.float32), np.zeros((38, h, w), np.float32)
            points = np.array(PERSON) * [w, h]
            for i, (px, py) in enumerate(points):
                heat[i] = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / 1.28)
            for (a, b), c in zip(LINKS, PAF_X):
                d = points[b] - points[a]
                length = max(float(np.hypot(*d)), 1e-6)
                t = np.clip(((xs - points[a][0]) * d[0] + (ys - points[a][1]) * d[1]) / length**2, 0, 1)
                near = np.hypot(xs - points[a][0] - t * d[0], ys - points[a][1] - t * d[1]) < 1.2
                pafs[c][near], pafs[c + 1][near] = d[0] / length, d[1] / length
            heat[18] = 1 - heat[:18].max(axis=0)
            return torch.from_numpy(pafs)[None], torch.from_numpy(heat)[None]

    return OnePerson


def openpose_ours(full: bool) -> Calls:
    """detect_people directly: annotate() would reuse its last detection of the same image. Random weights find
    nobody, so the full case replaces the body network by `OnePerson`: two hands at 4 scales and one face."""

    def build(folder, image):
        from controlnet.annotators import openpose_modules
        from controlnet.annotators.openpose import detect_people, draw

        OnePerson = one_person_class()
        body, hand, face = (openpose_modules.load_openpose(folder, f) for f in OPENPOSE_FILES)
        if not full:
            return lambda: draw(detect_people(image, body), 512, 512)
        found = detect_people(image, OnePerson(), hand, face)
        assert len(found) == 1 and found[0].left_hand is not None and found[0].face is not None
        return lambda: draw(detect_people(image, OnePerson(), hand, face), 512, 512, True, True, True)

    return build


def openpose_reference(full: bool) -> Calls:
    def build(folder, image, ref_src=None):
        from controlnet_aux.open_pose import OpenposeDetector

        detector = OpenposeDetector.from_pretrained(str(folder))
        options = {"detect_resolution": 512, "image_resolution": 512, "output_type": "np"}
        if full:
            detector.body_estimation.model = one_person_class()()
            assert len(detector.detect_poses(image, include_hand=True, include_face=True)) == 1
            options.update(include_hand=True, include_face=True)
        return lambda: detector(image, **options)

    return build


DETECTORS = {
    "softedge_hed": Detector(annotate_call("softedge_hed"), aux_call("hed", "HEDdetector"), "controlnet_aux HEDdetector",
                             save_state("hed_network", "ControlNetHED", "ControlNetHED.pth")),
    "softedge_pidinet": Detector(annotate_call("softedge_pidinet"), aux_call("pidi", "PidiNetDetector"),
                                 "controlnet_aux PidiNetDetector", pidinet_weights),
    "mlsd": Detector(annotate_call("mlsd"), aux_call("mlsd", "MLSDdetector"), "controlnet_aux MLSDdetector",
                     save_state("lines", "_build_large", "mlsd_large_512_fp32.pth")),
    "lineart_realistic": Detector(annotate_call("lineart_realistic"), aux_call("lineart", "LineartDetector"),
                                  "controlnet_aux LineartDetector", lineart_weights),
    "lineart_coarse": Detector(annotate_call("lineart_coarse"), aux_call("lineart", "LineartDetector", coarse=True),
                               "controlnet_aux LineartDetector (coarse)", lineart_weights),
    "depth_midas": Detector(annotate_call("depth_midas"), aux_call("midas", "MidasDetector", image_resolution=512),
                            "controlnet_aux MidasDetector", midas_weights, weights_side="aux"),
    "depth_zoe": Detector(annotate_call("depth_zoe"), aux_call("zoe", "ZoeDetector", image_resolution=512),
                          "controlnet_aux ZoeDetector", zoe_weights, weights_side="aux"),
    "normal_bae": Detector(annotate_call("normal_bae"),
                           aux_call("normalbae", "NormalBaeDetector", image_resolution=512),
                           "controlnet_aux NormalBaeDetector",
                           save_state("normal_bae_network", "NormalBae", "scannet.pt", wrap=True)),
    "softedge_teed": Detector(annotate_call("softedge_teed"), aux_call("teed", "TEEDdetector", "7_model.pth", True),
                              "controlnet_aux TEEDdetector", save_state("teed_network", "TEED", "7_model.pth")),
    "anyline": Detector(annotate_call("anyline"), aux_call("anyline", "AnylineDetector", "MTEED.pth", True),
                        "controlnet_aux AnylineDetector", save_state("teed_network", "TEED", "MTEED.pth")),
    "lineart_anime": Detector(annotate_call("lineart_anime"),
                              aux_call("lineart_anime", "LineartAnimeDetector", image_resolution=512),
                              "controlnet_aux LineartAnimeDetector",
                              save_state("lineart_anime_network", "AnimeLineartGenerator", "netG.pth")),
    "lineart_anime_denoise": Detector(annotate_call("lineart_anime_denoise"), manga_line_reference,
                                      "original res_skip with A1111's steps",
                                      save_state("manga_line_network", "MangaLineNetwork", "erika.pth"),
                                      ref_src="a MangaLineExtraction_PyTorch checkout"),
    "depth_leres": Detector(annotate_call("depth_leres"), aux_call("leres", "LeresDetector", image_resolution=512),
                            "controlnet_aux LeresDetector", leres_weights),
    "depth_leres++": Detector(annotate_call("depth_leres++"),
                              aux_call("leres", "LeresDetector", image_resolution=512, boost=True),
                              "controlnet_aux LeresDetector (boost)", leres_weights),
    "depth_anything_v2": Detector(annotate_call("depth_anything_v2"), depth_anything_reference,
                                  "the authors' DepthAnythingV2 (comfyui_controlnet_aux)", depth_anything_weights,
                                  ref_src="comfyui_controlnet_aux's src folder"),
    "dw_openpose_full": Detector(dwpose_ours, dwpose_reference, "A1111's ONNX pipeline (stand-in networks)",
                                 dwpose_weights, photo="astronaut", ref_src="a clone of Mikubill/sd-webui-controlnet"),
    "seg_ufade20k": Detector(annotate_call("seg_ufade20k"), uniformer_reference,
                             "sd-webui-controlnet's annotator/uniformer (mmseg)", uniformer_weights,
                             ref_src="the folder above a sd-webui-controlnet clone's annotator/"),
    "openpose": Detector(openpose_ours(False), openpose_reference(False), "controlnet_aux OpenposeDetector",
                         openpose_weights, photo="astronaut"),
    "openpose_full": Detector(openpose_ours(True), openpose_reference(True), "controlnet_aux OpenposeDetector",
                              openpose_weights, photo="astronaut"),
}


def photo(kind: str):
    if kind == "astronaut":
        from skimage import data

        return data.astronaut()
    from pidinet_inputs import picture

    return picture(11, (512, 768))


def one_thread() -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def median_time(call, repeats: int, clock=time.process_time) -> float:
    """Median time of `repeats` calls; process time by default (one thread: unaffected by other jobs on a shared
    machine), the wall clock where the work runs on a GPU."""
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append(clock() - start)
    return median(times)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def time_reference(args, name: str, folder: str, make_weights: bool) -> float:
    """One round of the reference: a fresh process in its own environment (load, warm-up, then timed calls)."""
    command = [args.aux_python, __file__, name, "--side", "aux", "--folder", folder, "--repeats", str(args.repeats)]
    command += ["--ref-src", args.ref_src] * bool(args.ref_src) + ["--make-weights"] * make_weights
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if args.keep_freed_memory == "both":
        from controlnet.memory import GLIBC_ENV

        env.update(GLIBC_ENV)  # the reference's process with the allocator settings ours has
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{name}: the reference side failed:\n" + "\n".join(done.stderr.strip().splitlines()[-5:]))
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def compare(args, name: str) -> None:
    detector = DETECTORS[name]
    with tempfile.TemporaryDirectory() as folder:
        if detector.weights_side == "ours" and not args.weights:
            detector.make_weights(Path(folder))
        aux_makes = detector.weights_side == "aux" and bool(args.aux_python)
        theirs = [time_reference(args, name, folder, aux_makes)] if aux_makes else []  # the file before ours loads it
        call = detector.ours(args.weights or Path(folder), photo(detector.photo))
        call()  # warm-up: loading and first-call caches
        ours = []
        for _ in range(args.rounds):
            ours.append(median_time(call, args.repeats))
            if args.aux_python and len(theirs) < args.rounds:
                theirs.append(time_reference(args, name, folder, False))
    rounds = " (rounds: " + ", ".join(f"{o:.3f}/{t:.3f}" for o, t in zip(ours, theirs)) + ")" if len(theirs) > 1 else ""
    line = f"{name} (ours): {median(ours):.3f} s"
    if theirs:
        ratio = median(ours) / median(theirs)
        line += f"; {detector.reference_name}: {median(theirs):.3f} s; ratio {ratio:.2f}{rounds}"
    print(line, flush=True)


def device_compare(args, name: str) -> None:
    """Ours on `args.device` against ours on the CPU (all threads), wall clock; each maps back to numpy, so a
    call's time includes the copy from the device."""
    import torch

    from controlnet.annotators.local_models import on_device

    detector = DETECTORS[name]
    seconds = []  # on args.device, then on the CPU (a list: --device cpu times the CPU twice, not once)
    with tempfile.TemporaryDirectory() as folder:
        if not args.weights:
            detector.make_weights(Path(folder))
        image = photo(detector.photo)
        for device in (args.device, "cpu"):
            with on_device(device):
                call = detector.ours(args.weights or Path(folder), image)
                call()  # warm-up: loading onto the device, first-call caches and kernels
                seconds.append(median_time(call, args.repeats, clock=time.perf_counter))
    gpu, cpu = seconds
    print(f"{name}: {args.device} {gpu:.3f} s, cpu ({torch.get_num_threads()} threads) {cpu:.3f} s, "
          f"speed-up {cpu / gpu:.1f}x", flush=True)
    print("RESULT " + json.dumps({"detector": name, "device": args.device, "device_s": round(gpu, 4),
                                  "cpu_s": round(cpu, 4), "cpu_threads": torch.get_num_threads()}), flush=True)


def reference_side(args) -> None:
    """Runs in the reference's environment (controlnet_aux 0.0.10 and torch there; our package is not imported)."""
    detector, folder = DETECTORS[args.detectors[0]], Path(args.folder)
    if args.make_weights:
        detector.make_weights(folder)
    call = detector.reference(folder, photo(detector.photo), args.ref_src)
    call()
    print(json.dumps({"seconds": median_time(call, args.repeats)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detectors", nargs="*", metavar="DETECTOR", help=f"one or more of: {', '.join(DETECTORS)}")
    parser.add_argument("--aux-python", help="a Python with the reference installed (controlnet-aux 0.0.10, torch)")
    parser.add_argument("--ref-src", help="the reference's source where controlnet_aux lacks it (see --list)")
    parser.add_argument("--weights", type=Path, help="a published file or folder to time ours on (one detector)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per round, after one warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="ours and the reference alternate this many times")
    parser.add_argument("--device", help="time ours on this device (cuda, cuda:N, mps) against ours on the CPU")
    parser.add_argument("--keep-freed-memory", choices=("none", "ours", "both"), default="none",
                        help="glibc keeps freed memory for reuse (controlnet.memory) in our process, as the "
                        "`controlnet` command does, or in both sides' processes; none: both as glibc sets them")
    parser.add_argument("--list", action="store_true", help="the detectors, their references and what --ref-src is")
    parser.add_argument("--side", choices=("ours", "aux"), default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--make-weights", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        for name, d in DETECTORS.items():
            print(f"{name:<22} {d.reference_name}" + (f"; --ref-src: {d.ref_src}" if d.ref_src else ""))
        return
    unknown = [name for name in args.detectors if name not in DETECTORS]
    if unknown or not args.detectors:
        parser.error(f"name detectors among: {', '.join(DETECTORS)} (not {', '.join(unknown) or 'none'})")
    if args.weights and len(args.detectors) > 1:
        parser.error("--weights times one detector: name only that one")
    if args.device:
        made_by_reference = [n for n in args.detectors if DETECTORS[n].weights_side == "aux"]
        if made_by_reference and not args.weights:
            parser.error(f"--device: {', '.join(made_by_reference)} need --weights FILE (their real-size file is made "
                         "by the reference's classes)")
        for name in args.detectors:
            device_compare(args, name)
        return
    one_thread()
    if args.side == "aux":
        reference_side(args)
        return
    for name in args.detectors:
        detector = DETECTORS[name]
        if args.aux_python and detector.ref_src and not args.ref_src:
            parser.error(f"{name}'s reference needs --ref-src: {detector.ref_src}")
        if detector.weights_side == "aux" and not (args.aux_python or args.weights):
            parser.error(f"{name}: give --aux-python (it makes the random real-size file) or --weights FILE")
    if args.keep_freed_memory != "none":
        from controlnet.memory import keep_freed_memory

        if not keep_freed_memory():
            parser.error("--keep-freed-memory: not applied (glibc only; unset MALLOC_* and CONTROLNET_KEEP_FREED_MEMORY)")
    for name in args.detectors:
        compare(args, name)


if __name__ == "__main__":
    main()
