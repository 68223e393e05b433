"""`controlnet annotate NAME IMAGE -o OUT` and `controlnet annotators` (the list, with parameters)."""

from __future__ import annotations

import argparse
import json

from controlnet.errors import InputError


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "annotate",
        help="turn a photo into a condition map (canny, depth, pose, ...)",
        description="Run an annotator on IMAGE and write the condition map to OUT (PNG keeps it exact). "
        "`controlnet annotators` lists the names and their parameters.",
    )
    run.add_argument("name", metavar="NAME", help="annotator name, e.g. canny, mlsd, depth, pose")
    run.add_argument("image", metavar="IMAGE", help="input image file")
    run.add_argument("-o", "--output", required=True, metavar="OUT", help="output image file (.png recommended)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="annotator parameter, repeatable (e.g. --param low_threshold=50 --param model=./dpt-hybrid-midas)",
    )
    run.add_argument("--resolution", type=int, default=512, help="detect resolution: short side seen by the detector (512)")
    run.add_argument("--width", type=int, help="output width (default: the input's, or from --height keeping aspect)")
    run.add_argument("--height", type=int, help="output height")
    run.add_argument("--pixel-perfect", action="store_true", help="pick the detect resolution from the output size (A1111)")
    run.add_argument("--models-dir", "--annotator-dir", dest="models_dir", metavar="DIR",
                     help="the folder of the learned detectors' weights, flat (DIR/ControlNetHED.pth) or as "
                     "sd-webui-controlnet's annotator/downloads (DIR/hed/ControlNetHED.pth); default "
                     "$CONTROLNET_ANNOTATOR_DIR; --param model=FILE overrides it")
    run.add_argument("--resize-mode", default="just_resize",
                     help="fit to the output size: just_resize (default), crop_and_resize, resize_and_fill")
    run.add_argument("--device", help="where the learned detectors run: cpu (default), cuda, cuda:N or mps; "
                     "DWPose's OpenCV backend and the classical annotators always use the CPU")
    run.add_argument("--pose-json", metavar="FILE", help="openpose modules: also write the people found as the OpenPose "
                     "JSON that A1111's pose editor reads (coordinates normalised to the detect size)")
    run.set_defaults(func=annotate_command)

    listing = subparsers.add_parser(
        "annotators",
        help="list annotators, their parameters and the checkpoints they feed",
        description="List every annotator with its parameters, defaults and the checkpoint family it feeds.",
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=list_command)


def parse_params(pairs: list[str]) -> dict[str, str]:
    """['k=v', ...] -> {'k': 'v'}; values stay strings, each annotator parameter converts its own."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param expects KEY=VALUE, got {pair!r}")
        if key in params:
            raise InputError(f"--param {key} is given twice ({params[key]!r} and {value!r}); give it once")
        params[key] = value
    return params


def annotate_command(args: argparse.Namespace) -> int:
    from controlnet.annotators import annotate
    from controlnet.files import outside_inputs, save_image, writable_file

    outside_inputs(args.output, "the output image (-o)", {"the input image": args.image})  # it would be overwritten
    out = writable_file(args.output, what="output image", image=True)  # before the work, not after
    if args.pose_json:
        from controlnet.annotators import get_annotator
        from controlnet.annotators.openpose_modules import check_json_module

        check_json_module(get_annotator(args.name).name)
        if args.pixel_perfect:
            raise InputError("--pose-json takes the detect size from --resolution; leave out --pixel-perfect")
    detected = annotate(
        args.name,
        args.image,
        resolution=args.resolution,
        width=args.width,
        height=args.height,
        pixel_perfect=args.pixel_perfect,
        resize_mode=args.resize_mode,
        models_dir=args.models_dir,
        device=args.device,
        **parse_params(args.param),
    )
    save_image(detected, out)  # atomic: a failed write leaves the old file and no partial one
    print(f"wrote {out} ({detected.shape[1]}x{detected.shape[0]}, {args.name})")
    if args.pose_json:
        write_pose_json(args)
    return 0


def write_pose_json(args: argparse.Namespace) -> None:
    """The OpenPose JSON of the detection just drawn (the same detect size; the detection is reused)."""
    from controlnet.annotators import get_annotator
    from controlnet.annotators.api import with_weights
    from controlnet.annotators.openpose_modules import detect_json
    from controlnet.files import write_json

    spec = get_annotator(args.name)
    params = spec.bind(with_weights(spec, parse_params(args.param), args.models_dir))  # model from --models-dir too
    json_of = detect_json(spec.name, args.image, args.resolution, params.pop("model"), device=args.device, **params)
    write_json(args.pose_json, json_of)
    print(f"wrote {args.pose_json} (OpenPose JSON)")


def describe(spec) -> dict:
    """A JSON-friendly description of one annotator."""
    return {
        "name": spec.name,
        "feeds": spec.feeds,
        "summary": spec.summary,
        "map": spec.kind,
        "learned": spec.learned,
        "needs": spec.needs,
        "weights": list(spec.weights),
        "aliases": list(spec.aliases),
        "uses_resolution": spec.uses_resolution,
        "params": [
            {
                "name": p.name,
                "default": p.default,
                "type": p.kind if isinstance(p.kind, str) else p.kind.__name__,
                "required": p.required,
                "help": p.help,
            }
            for p in spec.params
        ],
    }


def list_command(args: argparse.Namespace) -> int:
    from controlnet.annotators import list_annotators

    specs = [describe(s) for s in list_annotators()]
    if args.json:
        print(json.dumps(specs, indent=2, default=str))
        return 0
    for s in specs:
        tag = "learned" if s["learned"] else "classical"
        aliases = f" (alias {', '.join(s['aliases'])})" if s["aliases"] else ""
        print(f"{s['name']}{aliases}  [{tag}, {s['map']} map]")
        print(f"    {s['summary']}")
        print(f"    feeds: {s['feeds']}")
        if s["needs"]:
            print(f"    needs: {s['needs']}")
        for p in s["params"]:
            default = "REQUIRED" if p["required"] else repr(p["default"])
            print(f"    --param {p['name']}={default}  ({p['type']}) {p['help']}")
    return 0
