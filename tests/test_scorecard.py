"""The recommendation rule and the text scorecard, on hand-made column tables (no models)."""

import pytest

from studio.eval.scorecard import CLIP_T_TOLERANCE, DREAMBOOTH_REFERENCE, format_scorecard, recommend


def column(step, scale=1.0, *, clip_t, dino=None, clip_i=None, index=None):
    label = "prompt only" if step is None else f"step {step} · ×{scale:g}"
    return {"column": index, "label": label, "step": step, "scale": 0.0 if step is None else scale, "n": 2,
            "clip_i": clip_i, "clip_t": clip_t, "dino": dino}


PROMPT_ONLY = column(None, clip_t=0.300, dino=0.40, clip_i=0.70)


def test_overfitting_picks_the_last_step_that_still_follows_the_prompt():
    columns = [PROMPT_ONLY,
               column(500, clip_t=0.301, dino=0.50, clip_i=0.72),
               column(1000, clip_t=0.296, dino=0.58, clip_i=0.75),
               column(1500, clip_t=0.292, dino=0.62, clip_i=0.77),
               column(2000, clip_t=0.270, dino=0.70, clip_i=0.82),
               column(2500, clip_t=0.260, dino=0.72, clip_i=0.84)]
    rec = recommend(columns)
    assert (rec["label"], rec["step"], rec["scale"]) == ("step 1500 · ×1", 1500, 1.0)
    reason = rec["reason"]
    assert "highest DINO (0.620)" in reason and "CLIP-T (0.292)" in reason and "prompt only (0.300)" in reason
    assert "later steps lose prompt adherence (step 2000: CLIP-T 0.270) — overfitting" in reason
    assert "train longer" not in reason


def test_fidelity_still_rising_at_the_last_step_says_train_longer():
    columns = [PROMPT_ONLY, column(4, clip_t=0.30, dino=0.45), column(8, clip_t=0.299, dino=0.52)]
    rec = recommend(columns)
    assert rec["step"] == 8
    assert "DINO still rises at the last step (0.450 at step 4 → 0.520): undertrained, train longer" in rec["reason"]
    assert "overfitting" not in rec["reason"]


def test_no_column_keeps_the_prompt_picks_the_best_clip_t_and_says_so():
    columns = [PROMPT_ONLY, column(500, clip_t=0.280, dino=0.60), column(1000, clip_t=0.285, dino=0.66),
               column(1500, clip_t=0.250, dino=0.75)]
    rec = recommend(columns)
    assert rec["step"] == 1000, "the best CLIP-T, not the best DINO"
    assert rec["reason"].startswith(f"no LoRA column keeps CLIP-T within {CLIP_T_TOLERANCE} of prompt only (0.300)")
    assert "CLIP-T 0.285" in rec["reason"] and "lower scale" in rec["reason"]


def test_the_tolerance_is_inclusive_and_absolute():
    just_in = column(4, clip_t=0.300 - CLIP_T_TOLERANCE, dino=0.60)
    just_out = column(8, clip_t=0.300 - CLIP_T_TOLERANCE - 0.0005, dino=0.70)
    assert recommend([PROMPT_ONLY, just_in, just_out])["step"] == 4


def test_scales_compete_and_scale_zero_is_not_a_lora():
    columns = [PROMPT_ONLY,
               column(8, 0.0, clip_t=0.31, dino=0.99),
               column(8, 0.5, clip_t=0.298, dino=0.55),
               column(8, 1.0, clip_t=0.26, dino=0.70)]
    columns[1]["label"] = "step 8 · ×0"
    rec = recommend(columns)
    assert (rec["step"], rec["scale"], rec["label"]) == (8, 0.5, "step 8 · ×0.5")


def test_clip_i_decides_when_dino_is_missing():
    rec = recommend([PROMPT_ONLY, column(4, clip_t=0.30, clip_i=0.80), column(8, clip_t=0.30, clip_i=0.74)])
    assert rec["step"] == 4 and rec["reason"].startswith("highest CLIP-I (0.800)")


def test_without_a_prompt_only_column_fidelity_decides_and_the_reason_says_so():
    rec = recommend([column(4, clip_t=0.20, dino=0.7), column(8, clip_t=0.31, dino=0.6)])
    assert rec["step"] == 4 and "no prompt-only column" in rec["reason"]


def test_a_lora_no_better_than_prompt_only_is_called_out():
    rec = recommend([PROMPT_ONLY, column(4, clip_t=0.30, dino=0.39)])
    assert "DINO is no higher than prompt only (0.400): the LoRA has not learned the subject yet" in rec["reason"]


def test_random_weights_put_the_warning_first():
    rec = recommend([PROMPT_ONLY, column(4, clip_t=0.30, dino=0.5)], random_weights=True)
    assert rec["reason"].startswith("[random weights — numbers mean nothing] highest DINO")


@pytest.mark.parametrize("columns", [[], [PROMPT_ONLY], [PROMPT_ONLY, column(4, clip_t=None, dino=0.5)]])
def test_no_scored_lora_column_no_recommendation(columns):
    assert recommend(columns) is None


def scores(random_weights=False):
    columns = [dict(PROMPT_ONLY, column=0),
               column(500, clip_t=0.296, dino=0.58, clip_i=0.75, index=1),
               column(1000, clip_t=0.270, dino=0.70, clip_i=0.82, index=2)]
    return {"grid": "grid-a", "run": "my-run", "created": "2025-01-01T00:00:00+00:00",
            "backbones": {"clip": {"name": "ViT-B-32-quickgelu/openai", "random_weights": random_weights},
                          "dino": {"name": "dino-vits16", "random_weights": random_weights}},
            "references": {"folder": "/data/robot", "count": 12}, "images": [], "columns": columns,
            "recommendation": recommend(columns, random_weights=random_weights)}


def test_scorecard_text_names_backbones_marks_the_baseline_and_recommends():
    text = format_scorecard(scores())
    lines = text.splitlines()
    assert "grid-a" in lines[0] and "my-run" in lines[0] and "12 reference images from /data/robot" in lines[0]
    assert "CLIP-I and CLIP-T: CLIP ViT-B-32-quickgelu/openai" in text and "DINO: dino-vits16" in text
    assert "random weights" not in text
    header = next(line for line in lines if line.startswith("column"))
    assert header.split() == ["column", "step", "scale", "CLIP-I", "DINO", "CLIP-T", "ΔCLIP-T", "consistent",
                              "images"]
    baseline = next(line for line in lines if line.startswith("prompt only"))
    # scores.json written before consistency existed: "–", and a line that says to score again
    assert baseline.split() == ["prompt", "only", "(baseline)", "–", "0", "0.700", "0.400", "0.300", "–", "2"]
    row = next(line for line in lines if line.startswith("step 1000"))
    assert row.split() == ["step", "1000", "·", "×1", "1000", "1", "0.820", "0.700", "0.270", "-0.030", "–", "2"]
    assert "Consistent: not measured (scored before consistency existed: score the grid again)." in text
    assert "Recommended: step 500 · ×1 — highest DINO (0.580)" in text
    ref = DREAMBOOTH_REFERENCE
    for value in (ref["sd"]["dino"], ref["sd"]["clip_i"], ref["sd"]["clip_t"], ref["real"]["dino"], ref["real"]["clip_i"]):
        assert str(value) in text
    assert "backbones, subjects and prompts differ" in text


def test_scorecard_with_random_backbones_says_the_numbers_mean_nothing():
    text = format_scorecard(scores(random_weights=True))
    assert "CLIP ViT-B-32-quickgelu/openai (random weights — numbers mean nothing)" in text
    assert "DINO: dino-vits16 (random weights — numbers mean nothing)" in text
    assert "— [random weights — numbers mean nothing] highest DINO" in text


def test_scorecard_without_lora_columns_says_there_is_nothing_to_recommend():
    data = scores() | {"columns": [dict(PROMPT_ONLY, column=0)], "recommendation": None}
    assert "Recommended: none — the grid has no LoRA column" in format_scorecard(data)


def test_scorecard_shows_consistency_baseline_prompts_and_external_columns():
    data = scores()
    data["columns"][0] |= {"kind": "prompt_only", "label": "baseline prompt", "consistency": 0.25}
    data["columns"][1] |= {"kind": "lora", "consistency": 0.75}
    data["columns"][2] |= {"kind": "lora", "consistency": 1.0}
    data["columns"].append({"column": 3, "label": "Freepik", "kind": "external", "step": None, "scale": 0.0, "n": 2,
                            "clip_i": 0.71, "clip_t": 0.31, "dino": 0.52, "consistency": 0.5})
    data |= {"baseline_prompts": ["Kazakh folk hero in an orange robe"],
             "consistency": {"metric": "dino", "threshold": 0.5123, "references": 12, "reference_mean": 0.61,
                             "rule": "…"}}
    data["recommendation"] = recommend(data["columns"])
    text = format_scorecard(data)
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("baseline prompt")).split()[-2:] == ["%", "2"]
    assert "25 %" in next(line for line in lines if line.startswith("baseline prompt"))
    assert "75 %" in next(line for line in lines if line.startswith("step 500"))
    external = next(line for line in lines if line.startswith("Freepik"))
    assert external.split()[:4] == ["Freepik", "(external)", "–", "–"] and "+0.010" in external and "50 %" in external
    assert ("Consistent: the share of a column's images whose DINO to the references is at least 0.512, the lowest "
            "leave-one-out DINO among the 12 references") in text
    assert "  Kazakh folk hero in an orange robe" in lines
    assert data["recommendation"]["label"] == "step 500 · ×1", "the external column is not a candidate"


def test_recommendation_floor_is_the_references_own_clip_t_when_that_is_lower():
    # A scorer that has never seen the subject rates a picture without it higher against the prompt:
    # the LoRA columns all score below prompt only, but as high as the training images themselves.
    columns = [PROMPT_ONLY, column(4, clip_t=0.249, clip_i=0.70), column(8, clip_t=0.245, clip_i=0.80),
               column(12, clip_t=0.15, clip_i=0.85)]
    fallback = recommend(columns)
    assert "overrides the prompt" in fallback["reason"] and fallback["step"] == 4
    rec = recommend(columns, reference_clip_t=0.25)
    assert rec["step"] == 8
    assert "training images' own CLIP-T" in rec["reason"] and "overfitting" in rec["reason"]
    # A higher reference CLIP-T never raises the floor above prompt only
    assert recommend(columns, reference_clip_t=0.9)["step"] == fallback["step"]


def test_a_baseline_prompt_column_is_named_in_the_reason():
    baseline = {**PROMPT_ONLY, "label": "baseline prompt", "kind": "prompt_only", "clip_i": 0.75}
    rec = recommend([baseline, column(4, clip_t=0.305, clip_i=0.72)])
    assert "stays within 0.01 of baseline prompt (0.300)" in rec["reason"]
    assert "CLIP-I is no higher than baseline prompt (0.750)" in rec["reason"]
