"""Synthetic chest CT phantoms: anatomy, measurements vs ground truth, reports, data set writer, preview.

Small grids (64³ at 4 mm, 128³ at 2 mm) keep the suite fast; the anatomy is defined in mm, so it is the same
phantom as at 256³ / 1 mm.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSynLib.io.images import write_image
from MedSynLib.phantom import Findings, Grid, make_phantom
from MedSynLib.phantom.dataset import MANIFEST_COLUMNS, DatasetSpec, read_report, write_dataset
from MedSynLib.phantom.findings import effusion_size_word, emphysema_grade
from MedSynLib.phantom.measure import (airway_volume, cardiothoracic_ratio, dice, effusion_volume, laa950,
                                       lobe_volumes)
from MedSynLib.phantom.preview import preview_files
from MedSynLib.phantom.report import PHRASES, phrase_pool, render_report, split_phrases

G64 = Grid.cube(64, 4.0)
G128 = Grid.cube(128, 2.0)


@functools.lru_cache(maxsize=None)
def phantom(seed: int, grid: Grid = G64, **force):
    return make_phantom(seed, grid, **force)


def _ph(seed, grid=G64, **force):
    return phantom(seed, grid, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in force.items()})


# ----------------------------------------------------------------------------------------------- anatomy

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_airway_one_component_reaching_every_lobe(seed):
    ph = _ph(seed, effusion="none")
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(ph.airway), True))
    assert cc.max() == 1, f"airway has {cc.max()} 26-connected components"
    for lobe in range(1, 6):
        assert (ph.airway[ph.lobes == lobe] > 0).any(), f"no airway in lobe {lobe}"


def test_airway_connected_on_finer_grid_and_with_effusion():
    ph = _ph(3, G128, effusion=("bilateral", "moderate"))
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(ph.airway), True))
    assert cc.max() == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_lobe_has_vessels_and_all_labels_present(seed):
    ph = _ph(seed, effusion="none")
    assert set(np.unique(ph.lobes)) == {0, 1, 2, 3, 4, 5}
    assert ph.truth["lobes_present"] == [1, 2, 3, 4, 5]
    for lobe in range(1, 6):
        assert ph.vessels[ph.lobes == lobe].sum() > 0, f"no vessels in lobe {lobe}"
    vols = lobe_volumes(ph.lobes, G64.spacing_zyx)
    assert all(v > 40 for v in vols.values()), vols
    assert 1500 < sum(vols.values()) < 4500


def test_outputs_types_hu_and_synthetic_flag():
    ph = _ph(0)
    assert ph.ct.dtype == np.int16 and ph.lobes.dtype == np.uint8 and ph.airway.dtype == np.uint8
    assert ph.ct.shape == (64, 64, 64)
    assert ph.truth["synthetic"] is True
    lung = (ph.lobes > 0) & (ph.vessels == 0) & (ph.airway == 0)
    assert -900 < np.median(ph.ct[lung]) < -780
    assert ph.ct.min() >= -1024 and ph.ct.max() > 600  # cortical bone
    assert np.median(ph.ct[0:3, 0:3, 0:3]) < -950  # air in the corner


def test_effusion_excluded_from_lobes():
    ph = _ph(4, effusion=("right", "large"))
    assert ph.effusion.sum() > 0
    assert not (ph.lobes[ph.effusion > 0] > 0).any()
    eff = effusion_volume(ph.ct, G64.spacing_zyx, ph.lobes, ph.effusion)
    assert eff["right"] == pytest.approx(ph.truth["effusion_ml_true"]["right"], abs=0.1)
    assert eff["left"] == 0


# ----------------------------------------------------------------------------------- measurements vs truth

@pytest.mark.parametrize("seed,eff,grid,rel,abs_ml", [
    (10, ("right", "moderate"), G128, 0.15, 15.0),
    (11, ("bilateral", "small"), G128, 0.15, 15.0),
    (12, ("left", "large"), G64, 0.25, 20.0),
    (13, ("bilateral", "moderate"), G64, 0.25, 20.0),
])
def test_effusion_volume_from_ct_without_mask(seed, eff, grid, rel, abs_ml):
    ph = _ph(seed, grid, effusion=eff, consolidation=0)
    got = effusion_volume(ph.ct, grid.spacing_zyx, ph.lobes)  # no effusion mask: CT densities only
    truth = ph.truth["effusion_ml_true"]
    for side in ("right", "left"):
        assert abs(got[side] - truth[side]) <= rel * truth[side] + abs_ml, (side, got, truth)


@pytest.mark.parametrize("seed,eff", [(10, ("right", "moderate")), (11, ("bilateral", "small"))])
def test_effusion_volume_from_ct_ignores_voxel_noise(seed, eff):
    """A generated CT's fluid has voxel texture that crosses the fluid HU range; on the 4 mm analysis grid (block
    means) 30 HU of voxel noise on a 2 mm CT must not move the reading out of the noise-free tolerance (before
    the analysis grid, the same noise read 62 mL of fluid on the dry side of seed 10)."""
    ph = _ph(seed, G128, effusion=eff, consolidation=0)
    noisy = ph.ct + np.random.default_rng(seed).normal(0.0, 30.0, ph.ct.shape).astype(np.float32)
    got = effusion_volume(noisy, G128.spacing_zyx, ph.lobes > 0)
    truth = ph.truth["effusion_ml_true"]
    for side in ("right", "left"):
        assert abs(got[side] - truth[side]) <= 0.15 * truth[side] + 15.0, (side, got, truth)


def test_no_effusion_measured_when_none():
    ph = _ph(14, effusion="none", consolidation=0)
    got = effusion_volume(ph.ct, G64.spacing_zyx, ph.lobes)
    assert got["total"] < 20.0, got


@pytest.mark.parametrize("seed,cm", [(0, False), (1, True), (2, False), (5, True)])
def test_cardiothoracic_ratio(seed, cm):
    ph = _ph(seed, effusion="none", cardiomegaly=cm)
    r = cardiothoracic_ratio(ph.lobes, G64.spacing_zyx, ph.ct)
    assert abs(r["ctr"] - ph.truth["findings"]["ctr"]) <= 0.04, (r, ph.truth["findings"]["ctr"])  # 4 mm voxels
    assert (r["ctr"] > 0.52) == cm


@pytest.mark.parametrize("seed,grade", [(20, "mild"), (21, "severe"), (22, "none")])
def test_laa950_matches_requested_emphysema(seed, grade):
    ph = _ph(seed, emphysema=grade)
    got = laa950(ph.ct, ph.lobes, ph.airway)
    want = ph.truth["findings"]["emphysema_laa"]
    if grade == "none":
        assert want == 0 and got < 2.0
    else:
        assert abs(got - want) <= 1.0, (got, want)
        assert emphysema_grade(want) == grade


def test_severe_emphysema_is_confluent_on_the_stage1_grid():
    """Severe emphysema: lucencies coalesce into areas of several 4 mm voxels, so the 64³ stage sees them as
    low-attenuation areas; mild emphysema stays scattered."""
    def lucent_components(ph):
        lucent = (ph.ct < -950) & (ph.lobes > 0)
        cc = sitk.ConnectedComponent(sitk.GetImageFromArray(lucent.astype(np.uint8)))
        return np.bincount(sitk.GetArrayViewFromImage(cc).ravel())[1:]  # voxels per component

    severe, mild = lucent_components(_ph(21, emphysema="severe")), lucent_components(_ph(20, emphysema="mild"))
    assert len(severe) < 200, len(severe)
    assert severe[severe >= 64].sum() >= 0.95 * severe.sum()  # >= 64 voxels: a 16 mm cube
    assert severe.sum() / len(severe) > 4 * mild.sum() / len(mild)  # mean cluster size


def test_simple_measures():
    ph = _ph(0)
    assert dice(ph.lobes, ph.lobes, 3) == 1.0
    assert dice(ph.airway, np.zeros_like(ph.airway)) == 0.0
    assert airway_volume(ph.airway, G64.spacing_zyx) == ph.airway.sum() * 64.0


# ------------------------------------------------------------------------------------------------ reports

_NEG = re.compile(r"\b(no|not|without|clear)\b", re.I)
_TERMS = {
    "effusion": r"pleural effusion|effusions|pleural space",
    "cardiomegaly": r"cardiomegaly|heart is enlarged|enlarged cardiac",
    "emphysema": r"emphysema|bulla",
    "consolidation": r"consolidation",
    "ggo": r"ground-glass",
    "nodule": r"nodule",
}


def _truth_of(f: Findings, age=60, sex="female") -> dict:
    return {"findings": f.to_dict(), "age": age, "sex": sex, "cardiomegaly": f.cardiomegaly,
            "emphysema_grade": emphysema_grade(f.emphysema_laa), "effusion_ml_true": dict(f.effusion_ml),
            "effusion_size": {k: effusion_size_word(v) for k, v in f.effusion_ml.items()}}


def _present(t: dict) -> dict:
    f = t["findings"]
    return {"effusion": any(v > 0 for v in t["effusion_ml_true"].values()), "cardiomegaly": t["cardiomegaly"],
            "emphysema": f["emphysema_laa"] > 0, "consolidation": bool(f["consolidation"]), "ggo": bool(f["ggo"]),
            "nodule": bool(f["nodules"])}


@pytest.mark.parametrize("seed", range(40))
def test_reports_never_contradict_truth(seed):
    rng = np.random.default_rng(seed)
    t = _truth_of(Findings.sample(rng, age=70))
    text = render_report(t, seed=seed)
    assert text.count("FINDINGS:") == 1 and text.count("IMPRESSION:") == 1
    present = _present(t)
    sentences = [s for s in re.split(r"(?<=[.])\s+|\n", text) if s.strip()]
    for key, pat in _TERMS.items():
        hits = [s for s in sentences if re.search(pat, s, re.I) and "pericardial" not in s.lower()]
        if not present[key]:
            assert all(_NEG.search(s) for s in hits), (key, hits, text)
        else:
            assert any(not _NEG.search(s) for s in hits), (key, text)
    eff = t["effusion_ml_true"]
    pos = [s for s in sentences if re.search(_TERMS["effusion"], s, re.I) and not _NEG.search(s)]
    for side, other in (("right", "left"), ("left", "right")):
        if eff[side] > 0 and eff[other] == 0:
            assert all(other not in s.lower() and "bilateral" not in s.lower() for s in pos), text
            assert any(side in s.lower() for s in pos), text
            assert any(effusion_size_word(eff[side]) in s.lower() for s in pos), text


def test_report_of_generated_case_and_template_split():
    ph = _ph(1)
    text = render_report(ph.truth, seed=3, header=True)
    assert text.startswith(f"{ph.truth['age']}") or "year old" in text.splitlines()[0]
    train, held = split_phrases(0.34, seed=1)
    for k, v in PHRASES.items():
        assert len(train[k]) >= 1 and set(train[k]) | set(held[k]) == set(v) and not set(train[k]) & set(held[k])
    assert sum(len(v) for v in held.values()) > 10
    t2 = render_report(ph.truth, seed=3, pool=train)
    assert "FINDINGS:" in t2
    assert phrase_pool("all") is PHRASES
    assert all(set(phrase_pool("train")[k]).isdisjoint(phrase_pool("heldout")[k]) for k in PHRASES)
    with pytest.raises(ValueError, match="wording"):
        phrase_pool("test")


def test_dataset_reports_use_only_the_requested_wording(tmp_path):
    from MedSynLib.phantom.dataset import make_case

    make_case(0, str(tmp_path), 32, 8.0, seed=5, measure=False, wording="heldout")
    truth = json.loads((tmp_path / "case_000000" / "truth.json").read_text(encoding="utf-8"))
    assert truth["report_wording"] == "heldout"
    assert truth["report"] == render_report(truth, seed=truth["seed"], pool=phrase_pool("heldout"))
    assert read_report(tmp_path / "case_000000" / "report.txt") == truth["report"]


def test_report_variants_paraphrase_the_same_findings_and_can_be_added_later(tmp_path):
    from MedSynLib.data.manifest import read_manifest
    from MedSynLib.phantom.dataset import case_reports

    small = DatasetSpec(size=32, spacing=8.0, seed=5, measure=False, wording="train")
    write_dataset(str(tmp_path), 1, small, log=None)
    first = (tmp_path / "case_000000" / "report.txt").read_text(encoding="utf-8")
    # added to the case already written; report.txt unchanged
    write_dataset(str(tmp_path), 1, dataclasses.replace(small, report_variants=4), log=None)
    case = tmp_path / "case_000000"
    assert (case / "report.txt").read_text(encoding="utf-8") == first
    truth = json.loads((case / "truth.json").read_text(encoding="utf-8"))
    reports = read_manifest(tmp_path / "manifest.csv")[0].reports
    assert len(reports) == 4 and len(set(reports)) == 4 and reports[0] == truth["report"].strip()
    assert list(reports) == [r.strip() for r in case_reports(truth, 4)]
    held = {t.split("{")[0] for v in phrase_pool("heldout").values() for t in v if len(t.split("{")[0]) > 25}
    assert "SYNTHETIC" in (case / "report_2.txt").read_text(encoding="utf-8")
    for text in reports:
        assert ("effusion" in text.lower()) == ("effusion" in reports[0].lower())
        assert not any(h in text for h in held), "paraphrases must keep to the data set's wording"
    write_dataset(str(tmp_path), 1, DatasetSpec(size=32, spacing=8.0, seed=5, measure=False, wording="train",
                                                report_variants=2), log=None)
    assert sorted(p.name for p in case.glob("report*.txt")) == ["report.txt", "report_2.txt"]
    with pytest.raises(ValueError, match="report_variants"):
        write_dataset(str(tmp_path), 1, DatasetSpec(size=32, spacing=8.0, report_variants=0), log=None)


# --------------------------------------------------------------------------------- data set writer, preview

def _files(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_dataset_deterministic_resumable_manifest_and_preview(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(str(a), 2, DatasetSpec(size=48, spacing=5.0, seed=3), log=None)
    write_dataset(str(b), 2, DatasetSpec(size=48, spacing=5.0, seed=3), workers=2, log=None)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa), "same seed must give identical files"

    # resume: one case removed, a half-written temporary folder left behind, one more case requested
    import shutil
    shutil.rmtree(a / "case_000001")
    (a / ".tmp-case_000001-999").mkdir()
    (a / ".tmp-case_000001-999" / "ct.nii.gz").write_bytes(b"partial")
    m0 = (a / "case_000000" / "ct.nii.gz").stat().st_mtime_ns
    write_dataset(str(a), 3, DatasetSpec(size=48, spacing=5.0, seed=3), log=None)
    assert (a / "case_000000" / "ct.nii.gz").stat().st_mtime_ns == m0  # kept, not rewritten
    assert not list(a.glob(".tmp-*"))
    assert _files(a)["case_000001/ct.nii.gz"] == fb["case_000001/ct.nii.gz"]
    rows = list(csv.DictReader(open(a / "manifest.csv")))
    assert [r["case_id"] for r in rows] == ["case_000000", "case_000001", "case_000002"]
    assert set(MANIFEST_COLUMNS) <= set(rows[0]) and rows[0]["synthetic"] == "1"
    for r in rows:
        for col in ("ct", "lobes", "airway", "vessels", "report", "truth"):
            assert (a / r[col]).exists()

    # geometry and SYNTHETIC marks
    img = sitk.ReadImage(str(a / rows[0]["ct"]))
    assert img.GetSize() == (48, 48, 48) and img.GetSpacing() == pytest.approx((5.0, 5.0, 5.0))
    assert img.GetOrigin() == pytest.approx((-117.5, -117.5, -117.5))
    assert img.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert "SYNTHETIC" in img.GetMetaData("descrip")
    assert img.GetPixelID() == sitk.sitkInt16
    lob = sitk.ReadImage(str(a / rows[0]["lobes"]))
    assert lob.GetPixelID() == sitk.sitkUInt8 and "SYNTHETIC" in lob.GetMetaData("descrip")
    assert "SYNTHETIC" in (a / rows[0]["report"]).read_text(encoding="utf-8")
    assert read_report(a / rows[0]["report"]).startswith(("FINDINGS:",)) or "year" in read_report(
        a / rows[0]["report"]).splitlines()[0]
    assert '"synthetic": true' in (a / rows[0]["truth"]).read_text(encoding="utf-8")

    # preview of the written files
    png = tmp_path / "p.png"
    preview_files(str(a / rows[0]["ct"]), str(png), lobes=str(a / rows[0]["lobes"]),
                  airway=str(a / rows[0]["airway"]), vessels=str(a / rows[0]["vessels"]), panel=128)
    out = sitk.ReadImage(str(png))
    assert out.GetSize() == (3 * 128, 2 * 128) and out.GetNumberOfComponentsPerPixel() == 3


def test_cli_registers_phantoms_and_preview():
    from MedSynLib.phantom.cli import add_parser
    import argparse

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="command"))
    a = ap.parse_args(["phantoms", "--n", "2", "--out", "x", "--size", "64", "--spacing", "4", "--workers", "2"])
    assert callable(a.func) and a.n == 2 and a.size == 64 and a.spacing == 4.0
    b = ap.parse_args(["preview", "--ct", "c.nii.gz", "--out", "p.png"])
    assert callable(b.func)
    from MedSynLib.cli import COMMAND_MODULES
    assert "MedSynLib.phantom.cli" in COMMAND_MODULES


def test_a_preview_shows_the_ct_then_the_overlays_on_planes_through_the_lungs(tmp_path):
    """What the README's caption says: CT planes, then the same planes with the masks; the planes cut the lungs
    (a sagittal plane through the mid-line would show only mediastinum)."""
    from MedSynLib.phantom.preview import lung_planes

    ct = np.full((48, 64, 64), 40, np.int16)  # (z, y, x) LPS: soft tissue
    lobes = np.zeros(ct.shape, np.uint8)
    lobes[10:40, 20:44, 8:24] = 5  # right lower lobe (low x = patient right), far off the mid-line
    lobes[30:40, 20:30, 40:56] = 1  # a small left upper lobe
    ct[lobes > 0] = -850
    assert lung_planes(lobes, ct.shape) == (26, 31, 16)
    assert lung_planes(None, ct.shape) == (24, 32, 19)
    paths = {}
    for name, array in (("ct", ct), ("lobes", lobes), ("airway", np.zeros_like(lobes)),
                        ("vessels", np.zeros_like(lobes))):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        write_image(sitk.GetImageFromArray(array), paths[name])
    rgb = preview_files(paths["ct"], str(tmp_path / "p.png"), lobes=paths["lobes"], airway=paths["airway"],
                        vessels=paths["vessels"], panel=64)
    assert rgb.shape == (128, 192, 3)
    ct_row, overlay_row = rgb[:64].astype(int), rgb[64:].astype(int)
    assert (ct_row[..., 0] == ct_row[..., 1]).all() and (ct_row[..., 1] == ct_row[..., 2]).all()  # grey: CT only
    for plane in range(3):  # each plane cuts lung: dark in the CT row, coloured in the overlay row
        ct_panel, overlay_panel = ct_row[:, 64 * plane:64 * (plane + 1)], overlay_row[:, 64 * plane:64 * (plane + 1)]
        assert (ct_panel[..., 0] < 100).sum() > 50
        assert (np.abs(overlay_panel[..., 0] - overlay_panel[..., 2]) > 10).sum() > 50
