"""An evaluation's settings, checked once before any model is loaded (`EvalSettings.check`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError, MissingFileError

MAX_N = 100_000
# sampling settings left None take the ControlNets' recommended values (controlnet.recommended), else these
SAMPLING_DEFAULTS = {"steps": 20, "guidance_scale": 5.0, "weight": 1.0, "mode": "balanced", "scheduler": "ddim"}


@dataclass
class EvalSettings:
    n: int = 64
    prompts: tuple[str, ...] = ("caption",)  # the perfect prompt in the world
    steps: int | None = None  # None: recommended, else SAMPLING_DEFAULTS
    guidance_scale: float | None = None
    scheduler: str | None = None
    weight: float | None = None
    mode: str | None = None
    seed: int = 0
    level: float = 0.95
    batch: int = 8
    uncontrolled: bool = True
    fid: bool = True
    fid_note: str = "not computed: turned off (--no-fid)"  # why FID/KID are absent, when they are
    fid_resize: str = "tf1"  # how pictures reach 299 px: tf1 (the standard) or torch (the earlier rule)
    samples_in_grid: int = 4
    extra: dict = field(default_factory=dict)
    approx: dict = field(default_factory=dict)  # approximate modes (controlnet.pipeline.reuse); {} = exact


    def sampling(self) -> dict:
        """What changes a generated picture (the cache key), besides model, row, prompt and seed."""
        keys = ("steps", "guidance_scale", "scheduler", "weight", "mode") + (("approx",) if self.approx else ())
        return {k: v for k, v in asdict(self).items() if k in keys}

    def check(self) -> EvalSettings:
        from controlnet.evaluation.stats import check_level
        from controlnet.pipeline.modes import mode_name
        from controlnet.pipeline.schedulers import scheduler_names

        self.n = checks.integer("n (samples per row)", self.n, lo=1, hi=MAX_N)
        if self.steps is not None:
            self.steps = checks.integer("steps", self.steps, lo=1, hi=1000)
        if self.guidance_scale is not None:
            self.guidance_scale = checks.number("guidance_scale (--cfg)", self.guidance_scale, lo=0.0, hi=checks.MAX_GUIDANCE)
        if self.scheduler is not None:
            self.scheduler = checks.choice("scheduler", self.scheduler, scheduler_names())
        if self.weight is not None:
            self.weight = checks.weight("weight", self.weight)
        try:
            self.mode = mode_name(self.mode) if self.mode is not None else None
        except ValueError as exc:
            raise InputError(f"--mode: {exc}") from None
        self.seed = checks.integer("seed", self.seed, lo=0, hi=2**32 - 1 - self.n)
        self.level = check_level(self.level)
        self.batch = checks.integer("batch", self.batch, lo=1, hi=1024)
        self.samples_in_grid = checks.integer("samples in the grid", self.samples_in_grid, lo=0, hi=64)
        self.fid_resize = checks.choice("--fid-resize", self.fid_resize, ("tf1", "torch"))
        self.approx = _approx_fields(self.approx)
        return self

    def fill_recommended(self, controlnets) -> list[str]:
        """Each sampling setting left None: the value the ControlNets recommend, when they agree (one
        setting serves every row), else SAMPLING_DEFAULTS. Returns the names taken from recommendations."""
        from controlnet import recommended

        taken = []
        for key, default in SAMPLING_DEFAULTS.items():
            if getattr(self, key) is None:
                value = recommended.agreed(controlnets, key, None)
                taken += [key] if value is not None else []
                setattr(self, key, default if value is None else value)
        return taken


def _approx_fields(value) -> dict:
    """The approximate modes checked, as the fields that differ from exact sampling (the cache key)."""
    from controlnet.pipeline.reuse import approximation

    return approximation(value or None).asked()


@dataclass(frozen=True)
class RowSpec:
    """One row: a ControlNet (label, file, the condition kind it reads) or, with `images`, a folder of
    already generated pictures (scored against every condition kind of the run)."""

    label: str
    path: Path
    kind: str | None
    images: bool = False


def parse_controlnet(spec: str, data_kind: str | None) -> RowSpec:
    """`mini:KIND`, `KIND=PATH` or `PATH` (its kind from `--data world:KIND` or the dataset)."""
    from controlnet.assets import MINI_CONDITIONS, MINI_DIT_CONDITIONS, resolve_controlnet

    spec = str(checks.path("--controlnet", spec))
    kind, _, rest = spec.partition("=")
    if rest and not Path(spec).exists():
        path, label = resolve_controlnet(str(checks.path("--controlnet", rest))), spec  # edges=mini:union too
    else:
        kind, path, label = None, resolve_controlnet(spec), spec
        for sep in ":-":
            if spec.startswith(f"mini{sep}") and spec[5:] in MINI_CONDITIONS:
                kind = spec[5:]
        if spec.startswith("mini-dit:") and spec[9:] in MINI_DIT_CONDITIONS:
            kind = spec[9:]
    if not path.exists():
        raise MissingFileError(f"--controlnet {spec}: {path} does not exist (a ControlNet file or folder)")
    return RowSpec(label, path, kind or data_kind)
