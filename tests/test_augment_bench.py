"""`python studio.py bench --augment`: the same short run without and with colour jitter + rotation (cached
copies, and uncached) on a tiny model, with the cache build each way. Figures are printed, never asserted."""

from __future__ import annotations

from studio.cli import main


def test_the_augment_bench_prints_each_run_the_ratio_and_the_cache_builds(capsys):
    # an SDXL preset is its own second setting: one setting, tiny-sdxl at 128 px, sdxl-character's augmentation
    assert main(["bench", "--augment", "--preset", "sdxl-character", "--steps", "3", "--images", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bench --augment: colour jitter + rotation against none, 2 generated images")
    assert "data.augment_variants 4" in out[1]
    assert out[3] == "tiny-sdxl (1024 px preset at 128 px, batch 1, flip True)"
    rows = {line.split("  ")[1].strip(): line for line in out[5:8]}
    assert rows.keys() == {"plain", "jitter+rotation", "jitter+rotation, uncached"}
    # 2 images × 2 flips, against 2 images × 4 augmented copies × 2 flips; none with train.cache_latents off
    assert rows["plain"].endswith(" 4") and rows["jitter+rotation"].endswith(" 16")
    assert rows["jitter+rotation, uncached"].endswith("(none: pixels each step)")
    assert "× the CPU per step of none" in out[8] and "target); its cache build" in out[8]
    assert "(16 latents against 4)" in out[8]
