"""Scoring every (condition kind, prompt setting, row): fidelity, world extras, FID/KID, CLIP score.

Each figure becomes a record {condition, prompt, row, metric, value, ci_low, ci_high, n, level,
higher_is_better}; what could not be computed is listed under `not_computed` with the reason.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from controlnet.evaluation import protocol
from controlnet.evaluation.stats import mean_ci

LOWER_IS_BETTER = ("depth_rmse", "depth_order_error", "fid", "kid", *protocol.LOWER_IS_BETTER)


def score_all(ctx, rows, kinds, annotator, params, inception, clip) -> dict:
    from controlnet.checkpoints import load_controlnet
    from controlnet.evaluation.cache import ImageCache
    from controlnet.evaluation.rows import UNCONTROLLED, generate_row

    s = ctx.settings
    plan = [(kind, setting, row) for kind in kinds for setting in s.prompts
            for row in ([None] if s.uncontrolled else []) + [r for r in rows if r.kind == kind or r.images]]
    records, samples, not_computed, loaded = [], {}, _not_computed(ctx, annotator, inception, clip), {}
    total = s.n * len({(setting, None if r is None else r.label) for _, setting, r in plan if r is None or not r.images})
    gen_bar = tqdm(total=total, desc="generating", unit="img", disable=not ctx.progress)
    ref_feats = _reference_features(ctx, inception) if inception else None
    for kind, setting, row in plan:
        label = UNCONTROLLED if row is None else row.label
        if row is not None and not row.images and row.label not in loaded:
            loaded[row.label] = load_controlnet(row.path)
        cache = ImageCache(ctx.cache_root, _cache_description(ctx, kind, setting, row))
        prompts = [_prompt(ctx, setting, item) for item in ctx.items]
        first = (setting, label) not in {(k[1], k[2]) for k in samples}
        if row is not None and row.images:
            images = _folder_row(ctx, row, cache)
        else:
            images = generate_row(ctx, loaded.get(label), kind if row is not None else None, prompts, cache,
                                  gen_bar if first else None)
        samples[(kind, setting, label)] = images[: s.samples_in_grid]
        per_image = _per_image(ctx, kind, images, annotator, params, prompts, clip)
        head = {"condition": kind, "prompt": setting, "row": label}
        records += [_record(head, m, mean_ci(v, w, s.level)) for m, (v, w) in per_image.items()]
        records += _protocol(ctx, kind, images, head, not_computed)
        if ref_feats is not None:
            records += _quality(ctx, head, cache, inception, ref_feats)
    gen_bar.close()
    conditions = {k: [it.conditions[k] for it in ctx.items[: s.samples_in_grid]] for k in kinds}
    return {"records": records, "not_computed": not_computed, "samples": samples, "conditions": conditions}


def _cache_description(ctx, kind, setting, row) -> dict:
    """What a row's pictures depend on (the cache key); an --images row's only on its folder."""
    from controlnet.evaluation.cache import model_id

    s = ctx.settings
    if row is not None and row.images:
        return {"images": model_id(row.path), "data": ctx.data.spec, "size": ctx.data.size}
    return {"model": ctx.model, "controlnet": None if row is None else model_id(row.path),
            "sampling": s.sampling() if row is not None else {**s.sampling(), "weight": None, "mode": None},
            "prompt": setting, "data": ctx.data.spec, "kind": kind if row is not None else None,
            "size": ctx.data.size}


def _folder_row(ctx, row, cache) -> list[np.ndarray]:
    """An --images row's pictures, put in the cache like sampled ones (so FID features are cached too)."""
    seeds = [ctx.settings.seed + i for i in range(ctx.settings.n)]
    images = dict(zip(seeds, ctx.folders[row.label]))
    for seed in cache.missing(seeds):
        cache.put(seed, images[seed])
    return ctx.folders[row.label]


def _prompt(ctx, setting, item) -> str:
    from controlnet.evaluation.prompts import data_prompt, world_prompt

    return world_prompt(setting, item.sample.scene) if item.sample is not None else data_prompt(setting, item.caption)


def _per_image(ctx, kind, images, annotator, params, prompts, clip) -> dict:
    """{metric: (values, weights)} over the row's pictures."""
    from controlnet.metrics.fidelity import control_fidelity_scores
    from controlnet.metrics.world import world_scores

    scores = []
    for img, item in zip(images, ctx.items):
        if item.sample is not None:
            scores.append(world_scores(kind, img, item.sample))
        elif annotator:
            cond = item.conditions[kind]
            scores.append({k: (v, 1.0) for k, v in control_fidelity_scores(annotator, img, cond, **params).items()})
        else:
            scores.append({})
    out = {m: (np.array([d[m][0] for d in scores]), np.array([d[m][1] for d in scores]))
           for m in (scores[0] if scores else {})}
    if clip is not None and any(prompts):
        from controlnet.evaluation.clip_score import clip_scores

        v = clip_scores(images, prompts, clip)
        keep = ~np.isnan(v)
        out["clip_score"] = (v[keep], np.ones(keep.sum()))
    if ctx.aesthetic is not None:
        from controlnet.evaluation.aesthetic import aesthetic_scores

        out["aesthetic"] = (aesthetic_scores(images, ctx.aesthetic, clip), np.ones(len(images)))
    return out


def _protocol(ctx, kind, images, head, not_computed) -> list[dict]:
    """The ControlNet++ protocol figure of this condition kind, when it can be computed here."""
    metric = protocol.metric_for(kind, ctx.data.is_world)
    if metric is None or metric.name in not_computed:
        return []
    est = protocol.estimate(metric, images, [it.conditions[kind] for it in ctx.items], ctx.models_dir,
                            ctx.settings.level)
    return [] if est is None else [_record(head, metric.name, est)]


def _record(head: dict, metric: str, est) -> dict:
    return {**head, "metric": metric, "value": est.value, "ci_low": est.low, "ci_high": est.high, "n": est.n,
            "higher_is_better": metric not in LOWER_IS_BETTER}


def _features_fn(inception, ctx):
    from controlnet.evaluation.inception import inception_features, load_inception

    net = load_inception(inception)
    return lambda images: inception_features(images, net, resize=ctx.settings.fid_resize)


def _features_name(ctx) -> str:
    """The cache name of Inception features: the earlier torch-resized ones keep their old name."""
    return "inception" if ctx.settings.fid_resize == "torch" else f"inception-{ctx.settings.fid_resize}"


def _reference_features(ctx, inception) -> np.ndarray | None:
    from controlnet.evaluation.cache import ImageCache

    refs = [it.reference for it in ctx.items]
    if any(r is None for r in refs):
        return None
    cache = ImageCache(ctx.cache_root, {"reference": ctx.data.spec, "size": ctx.data.size})
    seeds = [ctx.settings.seed + i for i in range(len(refs))]
    for seed in cache.missing(seeds):
        cache.put(seed, refs[seed - seeds[0]])
    return cache.features(seeds, _features_fn(inception, ctx), _features_name(ctx))


def _quality(ctx, head, cache, inception, ref_feats) -> list[dict]:
    from controlnet.evaluation.fid import fid, kid
    from controlnet.evaluation.stats import Estimate

    seeds = [ctx.settings.seed + i for i in range(ctx.settings.n)]
    feats = cache.features(seeds, _features_fn(inception, ctx), _features_name(ctx))
    if len(feats) < 2:
        return []
    k, k_std = kid(feats, ref_feats, subsets=50, subset_size=max(2, min(len(feats), len(ref_feats)) // 2))
    n = len(feats)
    return [_record(head, "fid", Estimate(fid(feats, ref_feats), float("nan"), float("nan"), n)),
            _record(head, "kid", Estimate(k, k - 1.96 * k_std, k + 1.96 * k_std, n))]


def _not_computed(ctx, annotator, inception, clip) -> dict:
    from controlnet.evaluation.clip_score import NOT_COMPUTED

    out = {}
    if clip is None:
        out["clip_score"] = NOT_COMPUTED
    if ctx.aesthetic is None:
        from controlnet.evaluation.aesthetic import NOT_COMPUTED as NO_HEAD

        out["aesthetic"] = NO_HEAD
    if inception is None:
        out["fid"] = out["kid"] = ctx.settings.fid_note
    elif any(it.reference is None for it in ctx.items):
        out["fid"] = out["kid"] = "not computed: the dataset has no reference pictures"
    if not ctx.data.is_world and not annotator:
        out["fidelity"] = "not computed: give --annotator NAME (the annotator that made the conditions)"
    out.update(protocol.not_computed(ctx.data.kinds, ctx.data.is_world, ctx.models_dir, ctx.data.size))
    return out
