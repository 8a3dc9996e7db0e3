"""A synthetic set (a `generate` batch) scored as a distribution, in the batch folder's scores.json.

Per image: CLIP-T (against its prompt, trigger word → class phrase), CLIP-I and DINO (mean cosine
to the references) and whether it is consistent with them. For the set: their means, consistency,
diversity (mean pairwise cosine distance of the fidelity features), FID and KID against the
references from Inception features, and CMMD from CLIP features. The top-level keys `clip_t`,
`clip_i`, `dino`, `diversity`, `fid`, `kid`, `cmmd` (and `consistency`) are numbers, or null with the
reason under `notes`; `details` gives each one's sample sizes, backbone and caveat.

Reference sets are usually small (the training images): FID at such sizes is strongly biased
and only compares batches of the same size against the same references; KID is unbiased but noisy.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

from studio.core.atomic import write_json_atomic
from studio.core.lock import ACCELERATOR
from studio.engine.runs import RunFolder, now_iso
from studio.eval.backbones import CLIP_DEFAULT, DINO_DEFAULT, DINO_NONE, BackboneError, load_clip, load_dino
from studio.eval.generate import batch_folder
from studio.eval.inception import INCEPTION_DEFAULT, INCEPTION_NONE, load_inception
from studio.eval.manifest import read_batch_manifest
from studio.eval.metrics import cmmd, consistent, diversity, frechet_distance, kernel_inception_distance, mean_cosine
from studio.eval.scoring import (SCORES_FILE, clip_t_prompt, consistency_entry, encode_files, image_counter,
                                 references, threshold_of)

METRICS = ("clip_t", "clip_i", "dino", "consistency", "diversity", "fid", "kid", "cmmd")
NAMES = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO", "consistency": "consistency",
         "diversity": "diversity", "fid": "FID", "kid": "KID", "cmmd": "CMMD"}
FID_RELIABLE = 2048
"""Below this many images per set the 2,048-d Inception covariances are rank-deficient."""
KID_INFORMATIVE = 100


def _caveat(metric: str, n: int, m: int, **extra: Any) -> str:
    if metric == "fid":
        return (f"FID is biased upward at small N and falls as N grows: {n} generated against {m} reference images "
                f"here ({'below' if min(n, m) < FID_RELIABLE else 'above'} the {FID_RELIABLE} where its covariances "
                "have full rank; papers use 10,000+). Compare only batches of the same size against the same "
                "references.")
    if metric == "kid":
        return (f"KID is unbiased at any N, but noisy at small N: ±{extra['std']:.4f} is its standard deviation over "
                f"{extra['subsets']} subsets of {extra['size']} images; it needs ~{KID_INFORMATIVE}+ images per set "
                "to tell batches apart, and can be slightly negative when the sets match.")
    if metric == "cmmd":
        return (f"CMMD (MMD² with a Gaussian kernel, σ = 10, on unit CLIP embeddings, ×1000) needs fewer images than "
                f"FID and is unbiased in the kernel's sense only at large N; the paper uses CLIP ViT-L/14@336, so with "
                f"{extra['backbone']} compare batches with each other, not with published values.")
    if metric == "diversity":
        return (f"mean cosine distance (1 − cos) over the {n * (n - 1) // 2} pairs of the batch's {extra['backbone']} "
                f"features; the references' own is {extra['references']:.3f}. Higher is more varied; near 0 means "
                "near-duplicates.")
    return f"mean over {n} images of raw cosines ({extra['backbone']})"


def score_batch(run: RunFolder, batch: str | Path, *, refs: Path | str | None = None, clip: str = CLIP_DEFAULT,
                dino: str = DINO_DEFAULT, inception: str = INCEPTION_DEFAULT,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score the batch `batch` (a name under the run's generated/, or a folder written by generate) against
    the references; write scores.json in the batch folder and return it.

    A CLIP backbone that cannot load raises BackboneError; a DINO or Inception one that cannot load
    leaves its metrics null with the reason under `notes`.
    """
    # 1. The batch, its images and prompts, and the references, before any model loads.
    folder = batch_folder(run, batch)
    manifest = read_batch_manifest(folder)
    entries = [im for im in manifest.images if (folder / im.file).is_file()]
    if not entries:
        raise ValueError(f"batch {folder} has no images yet: generate some first")
    ref_folder, ref_paths = references(run, refs)
    clip_prompts = [clip_t_prompt(im.prompt, manifest.trigger_word, manifest.class_phrase) for im in entries]
    notes: dict[str, str] = {}
    tick = image_counter(len(ref_paths) + len(entries), progress)

    # 2. Features, on the accelerator; DINO and Inception are optional.
    with ACCELERATOR.hold("scoring"):
        clip_model = load_clip(clip)
        dino_model = None
        if dino == DINO_NONE:
            notes["dino"] = "no DINO backbone (--dino none)"
        else:
            try:
                dino_model = load_dino(dino)
            except BackboneError as err:
                notes["dino"] = str(err)
        inception_model = None
        if inception == INCEPTION_NONE:
            notes["fid"] = notes["kid"] = "no Inception backbone (--inception none)"
        else:
            try:
                inception_model = load_inception(inception)
            except BackboneError as err:
                notes["fid"] = notes["kid"] = str(err)
        extra = inception_model.encode_images if inception_model is not None else None
        tick(0)
        ref_clip, ref_dino, ref_inc = encode_files(ref_paths, clip_model, dino_model, tick, extra)
        gen_clip, gen_dino, gen_inc = encode_files([folder / im.file for im in entries], clip_model, dino_model,
                                                   tick, extra)
        texts = sorted(set(clip_prompts))
        text_features = clip_model.encode_texts(texts)

    # 3. Per image, then the set.
    n, m = len(entries), len(ref_paths)
    clip_i = mean_cosine(gen_clip, ref_clip).tolist()
    dino_s = mean_cosine(gen_dino, ref_dino).tolist() if dino_model is not None else None
    text_rows = text_features.double()[[texts.index(p) for p in clip_prompts]]
    clip_t = (gen_clip.double() * text_rows).sum(dim=1).tolist()
    fidelity_name = "dino" if dino_model is not None else "clip_i"
    fid_gen, fid_ref = (gen_dino, ref_dino) if dino_model is not None else (gen_clip, ref_clip)
    fid_backbone = dino_model.name if dino_model is not None else clip_model.name
    threshold = threshold_of(fid_ref)
    hits = consistent(dino_s if dino_s is not None else clip_i, threshold) if threshold else None
    if threshold is None:
        notes["consistency"] = "consistency needs at least 2 reference images"

    values: dict[str, Any] = {"clip_t": statistics.fmean(clip_t), "clip_i": statistics.fmean(clip_i),
                              "dino": statistics.fmean(dino_s) if dino_s is not None else None,
                              "consistency": statistics.fmean(hits) if hits is not None else None}
    details: dict[str, dict[str, Any]] = {
        "clip_t": {"n": n, "backbone": clip_model.name, "caveat": _caveat("clip_t", n, m, backbone=clip_model.name)},
        "clip_i": {"n": n, "n_reference": m, "backbone": clip_model.name,
                   "caveat": _caveat("clip_i", n, m, backbone=clip_model.name)},
        "consistency": {"n": n, "n_reference": m, **consistency_entry(fidelity_name, threshold)},
    }
    if dino_model is not None:
        details["dino"] = {"n": n, "n_reference": m, "backbone": dino_model.name,
                           "caveat": _caveat("dino", n, m, backbone=dino_model.name)}
    if n >= 2:
        values["diversity"] = diversity(fid_gen)
        own = diversity(fid_ref) if m >= 2 else float("nan")
        details["diversity"] = {"n": n, "backbone": fid_backbone, "references": own,
                                "caveat": _caveat("diversity", n, m, backbone=fid_backbone, references=own)}
    else:
        values["diversity"] = None
        notes["diversity"] = "diversity needs at least 2 images"
    if inception_model is not None and (n < 2 or m < 2):
        notes["fid"] = notes["kid"] = f"FID and KID need at least 2 images in each set ({n} generated, {m} references)"
    elif inception_model is not None:
        values["fid"] = frechet_distance(gen_inc, ref_inc)
        kid = kernel_inception_distance(gen_inc, ref_inc)
        values["kid"] = kid.mean
        details["fid"] = {"n": n, "n_reference": m, "backbone": inception_model.name,
                          "caveat": _caveat("fid", n, m)}
        details["kid"] = {"n": n, "n_reference": m, "backbone": inception_model.name, "std": kid.std,
                          "subsets": kid.subsets, "subset_size": kid.subset_size,
                          "caveat": _caveat("kid", n, m, std=kid.std, subsets=kid.subsets, size=kid.subset_size)}
    values.setdefault("fid", None)
    values.setdefault("kid", None)
    values["cmmd"] = cmmd(gen_clip, ref_clip)
    details["cmmd"] = {"n": n, "n_reference": m, "backbone": clip_model.name,
                       "caveat": _caveat("cmmd", n, m, backbone=clip_model.name)}

    random = {"clip": clip_model.random_weights, "dino": bool(dino_model and dino_model.random_weights),
              "inception": bool(inception_model and inception_model.random_weights)}
    scores = {
        "batch": folder.name, "folder": str(folder), "run": run.name, "created": now_iso(),
        **values,
        "notes": notes,
        "details": details,
        "backbones": {"clip": {"name": clip_model.name, "random_weights": random["clip"]},
                      "dino": {"name": dino_model.name if dino_model else DINO_NONE, "random_weights": random["dino"]},
                      "inception": {"name": inception_model.name if inception_model else INCEPTION_NONE,
                                    "random_weights": random["inception"]}},
        "references": {"folder": str(ref_folder), "count": m},
        "images": [{"file": im.file, "prompt": im.prompt, "clip_prompt": clip_prompts[i], "seed": im.seed,
                    "clip_t": clip_t[i], "clip_i": clip_i[i], "dino": dino_s[i] if dino_s is not None else None,
                    "consistent": hits[i] if hits is not None else None} for i, im in enumerate(entries)],
    }
    write_json_atomic(folder / SCORES_FILE, scores)
    return scores


def load_batch_scores(folder: Path) -> dict[str, Any] | None:
    """A batch folder's scores.json, or None when it has not been scored."""
    path = Path(folder) / SCORES_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): score the batch again") from err


def metric_rows(scores: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, value, sample sizes and backbone, caveat or the reason it is missing) per metric, for the
    CLI and the Score tab."""
    rows = []
    for key in METRICS:
        value, detail = scores.get(key), scores.get("details", {}).get(key, {})
        if value is None:
            shown, why = "–", scores.get("notes", {}).get(key, "")
        elif key == "consistency":
            shown = f"{value * 100:.0f} %"
            why = f"{NAMES[detail['metric']]} ≥ {detail['threshold']:.3f}: the {detail['rule']}"
        elif key == "kid":
            shown, why = f"{value:.4f} ± {detail['std']:.4f}", detail["caveat"]
        else:
            shown, why = f"{value:.3f}", detail["caveat"]
        sizes = f"N = {detail['n']}" if "n" in detail else ""
        sizes += f" vs {detail['n_reference']} refs" if "n_reference" in detail else ""
        sizes += f" · {detail['backbone']}" if detail.get("backbone") else ""
        rows.append((NAMES[key], shown, sizes, why))
    return rows


def format_batch_scores(scores: dict[str, Any]) -> str:
    """The batch's scores as text: one line per metric with its sample sizes, then the caveats."""
    from studio.eval.scorecard import RANDOM_WARNING

    refs = scores["references"]
    backbones = scores["backbones"]
    random = [f"{kind} {b['name']}" for kind, b in backbones.items() if b.get("random_weights")]
    lines = [f"Scores for batch {scores['batch']} of run {scores['run']}: {len(scores['images'])} images against "
             f"{refs['count']} reference images from {refs['folder']}",
             "Backbones: " + ", ".join(f"{kind} {b['name']}" for kind, b in backbones.items())]
    if random:
        lines.append(f"[{RANDOM_WARNING}: {', '.join(random)}]")
    lines.append("")
    rows = metric_rows(scores)
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, sizes, _ in rows:
        lines.append(f"{name.ljust(width)}  {value.rjust(value_width)}  {sizes}".rstrip())
    lines += ["", "Notes:"]
    lines += [f"- {name}: {why}" for name, _, _, why in rows if why]
    return "\n".join(lines)
