"""Write a :class:`GenerationResult` as a folder: CT, masks (NIfTI + Slicer .seg.nrrd), stage-1 result, sidecar,
optional ``preview.png``.

The folder is claimed, locked and written through :class:`~MedSynLib.io.files.OutputFolder` (marker: the sidecar):
only an earlier result is ever replaced, and only with ``overwrite``. Names and metadata of a generated result say
SYNTHETIC; a segmentation's say which CT it belongs to, and carry that CT's SYNTHETIC / EDITED marks. The sidecar
``medsyn.json`` holds: ``synthetic`` (true for what the model drew as a whole and for the masks of a SYNTHETIC CT;
false for the masks of a patient's CT), for a segmentation ``edited`` and ``source_ct`` (whether its CT was EDITED,
and the CT's file), mode, report, seed, settings (steps, guidance, sampler), held channels, device, precision, SR
tiles, model space (and the atlas alignment of a segmented CT), timings per stage, model (name, title, path, sha256
of each stage, its statement), geometry, file names and software versions.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..io.files import OutputFolder
from ..io.images import SYNTHETIC_DESCRIPTION, to_image, write_image, write_segmentation
from ..modelstore.bundle import LoadedModel
from .generation import GenerationResult

SIDECAR = "medsyn.json"
SEGMENTATION_PREVIEW = "MedSyn segmentation (model output) over the input CT - not for clinical use"


def _versions() -> dict:
    import torch
    import transformers

    return {"medsyn": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "SimpleITK": sitk.Version_VersionString(), "python": platform.python_version()}


def model_info(model: LoadedModel) -> dict:
    """What the sidecar says about the model: name, title, folder, space, the sha256 of each stage's weights and
    the model's ``statement`` (the sentence shown with every result, e.g. that it was trained on synthetic data),
    when it has one."""
    statement = {"statement": model.spec["statement"]} if model.spec.get("statement") else {}
    return {"name": model.name, "title": model.spec.get("title", model.name), "path": str(model.folder),
            "space": model.space, "license": model.spec.get("license", "unknown"), "sha256": dict(model.sha256),
            **statement}


def statement_line(info: dict) -> str | None:
    """The line a command prints last about the model of :func:`model_info` ``info``: its statement, if any."""
    return f"model {info['name']}: {info['statement']}" if info.get("statement") else None


def result_folder(out_dir: Path, overwrite: bool = False, inputs=()) -> OutputFolder:
    """Claim ``out_dir`` for a result (checked now; use ``with`` to lock it for the run). ``inputs``: the files the
    run reads, which the result folder may not hold."""
    return OutputFolder(out_dir, SIDECAR, overwrite, inputs)


def write_result(result: GenerationResult, out_dir: Path | OutputFolder, model_info: dict, preview: bool = False,
                 source_ct: Path | None = None, overwrite: bool = False, dicom: bool = False,
                 series: str | None = None) -> Path:
    """Write the result folder ``out_dir`` atomically (a generated CT, or a segmentation: a result without a CT);
    returns the sidecar path.

    out_dir: a folder path, or a :func:`result_folder` already claimed (and locked) by the caller.
    preview: also write ``preview.png`` (axial, coronal, sagittal planes, lung window, mask overlays) of the
    generated CT, or of ``source_ct`` (the segmented CT's file) when there is none.
    overwrite: replace an earlier result at ``out_dir`` (anything else there is refused).
    dicom: also write the DICOM objects (:mod:`MedSynLib.io.dicom`) into a sub-folder: a generated CT as a
    SYNTHETIC series with its Segmentation; a segmentation as a Segmentation referencing ``source_ct``, the DICOM
    folder it was made from (``series``: its Series Instance UID where the folder holds several).
    The masks of a SYNTHETIC or EDITED CT (``result.source``) carry its marks in their names, headers and sidecar
    (``synthetic``, ``edited``).
    """
    mode = "segment" if result.ct_hu is None else "generate"
    source = result.source
    output = out_dir if isinstance(out_dir, OutputFolder) else result_folder(out_dir, overwrite, [source_ct])
    out_dir = output.path
    seed = result.metadata.get("seed")
    tag = f"seed{seed}"
    files = {}
    synthetic = mode == "generate" or source.synthetic
    edited = mode == "segment" and source.edited
    mark = " ".join(["SYNTHETIC"] * synthetic + ["EDITED"] * edited)
    ct_name = Path(source_ct).name if source_ct is not None else "the input CT"
    description = SYNTHETIC_DESCRIPTION if mode == "generate" else \
        f"{mark + ' ' if mark else ''}MedSyn segmentation of {ct_name}"
    with output.writing() as tmp:
        if result.ct_hu is not None:
            files["ct"] = f"SYNTHETIC_MedSyn_CT_{tag}.nii.gz"
            write_image(to_image(result.ct_hu, result.geometry), tmp / files["ct"])
        prefix = "SYNTHETIC_MedSyn" if mode == "generate" else "_".join([*mark.split(), "MedSyn_segmentation"])
        files["segmentation"] = f"{prefix}_anatomy_{tag}.seg.nrrd"
        write_segmentation(result.lobes, result.airway, result.vessels, result.geometry, tmp / files["segmentation"],
                           description=description)
        for name in ("lobes", "airway", "vessels"):
            files[name] = f"{prefix}_{name}_{tag}.nii.gz"
            write_image(to_image(getattr(result, name).astype(np.uint8), result.geometry), tmp / files[name],
                        description=description)
        # the stage-1 result in model space; a segmentation's CT channel is the patient's scan: left out
        channels = result.lowres if mode == "generate" else result.lowres[1:]
        files["lowres"] = f"{prefix}_lowres_{len(channels)}ch_{tag}.nii.gz"
        lowres = sitk.GetImageFromArray(np.moveaxis(channels, 0, -1), isVector=True)
        write_image(result.lowres_geometry.apply(lowres), tmp / files["lowres"], description=description)
        if preview:
            from ..phantom.preview import preview_files  # the phantom package is only needed for previews

            ct_file = tmp / files["ct"] if "ct" in files else source_ct
            if ct_file is None:
                raise ValueError("a preview of a segmentation needs the CT file it was made from (source_ct)")
            preview_files(str(ct_file), str(tmp / "preview.png"),
                          **{name: str(tmp / files[name]) for name in ("lobes", "airway", "vessels")},
                          description=SYNTHETIC_DESCRIPTION if mode == "generate" else
                          f"{mark + ' CT: ' if mark else ''}{SEGMENTATION_PREVIEW}")
            files["preview"] = "preview.png"
        if dicom:
            files["dicom"], dicom_record = _write_dicom(result, tmp, mode, model_info, source_ct, series)
        sidecar = {"synthetic": synthetic, "mode": mode, **result.metadata, "model": model_info,
                   "geometry": result.geometry.to_dict(), "lowres_geometry": result.lowres_geometry.to_dict(),
                   "files": files, "versions": _versions(),
                   "notice": "SYNTHETIC image generated by MedSyn; not a patient scan, not for clinical use"
                   if mode == "generate" else _segmentation_notice(ct_name, synthetic, edited)}
        if mode == "segment":
            sidecar.update(edited=edited, source_ct=str(source_ct) if source_ct is not None else None)
        if dicom:
            sidecar["dicom"] = dicom_record
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, allow_nan=False), encoding="utf-8")
    return out_dir / SIDECAR


def _segmentation_notice(ct_name: str, synthetic: bool, edited: bool) -> str:
    what = {(False, False): "the patient CT", (False, True): "the EDITED patient CT",
            (True, False): "the SYNTHETIC CT", (True, True): "the SYNTHETIC, EDITED CT"}[synthetic, edited]
    kind = ("synthetic" if not edited else "synthetic, with an edited region") if synthetic else \
        ("the patient's, not synthetic" if not edited else "the patient's with a region MedSyn replaced")
    return (f"lobe, airway and vessel masks MedSyn drew on {what} {ct_name} (its grid: 'geometry'); the CT is {kind}; "
            "not for clinical use")


def write_edit_result(result, out_dir: Path | OutputFolder, model_info: dict, source_ct: Path | None = None,
                      preview: bool = False, overwrite: bool = False, dicom: bool = False,
                      series: str | None = None) -> Path:
    """Write an :class:`~.edit.EditResult` folder like :func:`write_result`; returns the sidecar path.

    Every file is marked EDITED in its name and header; the edited CT is the input scan with one region replaced,
    so it is SYNTHETIC (name, header, sidecar) exactly when the input was (``result.source``: what the input's
    header says, :class:`~MedSynLib.io.images.Provenance`). The sidecar records the region (volume, bounding box) and
    ``files.ct`` names the edited CT. preview: also write ``preview.png`` of the edited CT with the region's
    generated masks.
    dicom: also write the edited CT as a new EDITED series of the patient's study, referencing ``source_ct`` (the
    DICOM folder it was made from; ``series`` its Series Instance UID), with a Segmentation of the region's anatomy.
    """
    from .edit import EDITED_DESCRIPTION

    output = out_dir if isinstance(out_dir, OutputFolder) else result_folder(out_dir, overwrite, [source_ct])
    tag = f"seed{result.metadata.get('seed')}"
    source = result.source
    mark = "SYNTHETIC_EDITED" if source.synthetic else "EDITED"
    files = {"ct": f"{mark}_MedSyn_CT_{tag}.nii.gz", "region": f"{mark}_MedSyn_region.nii.gz",
             "difference": f"{mark}_MedSyn_difference_HU_{tag}.nii.gz",
             "segmentation": f"{mark}_MedSyn_region_anatomy_{tag}.seg.nrrd"}
    ct_description = ("SYNTHETIC, " if source.synthetic else "") + EDITED_DESCRIPTION
    description = ("SYNTHETIC " if source.synthetic else "") + "MedSyn edit: anatomy generated inside the edited region"
    with output.writing() as tmp:
        write_image(to_image(result.ct, result.geometry), tmp / files["ct"], description=ct_description)
        write_image(to_image(result.region, result.geometry), tmp / files["region"],
                    description="MedSyn edit: the region that was replaced")
        write_image(to_image(result.difference_hu, result.geometry), tmp / files["difference"],
                    description="MedSyn edit: edited minus input CT (HU)")
        write_segmentation(result.lobes, result.airway, result.vessels, result.geometry, tmp / files["segmentation"],
                           description=description)
        for name in ("lobes", "airway", "vessels"):
            files[name] = f"{mark}_MedSyn_region_{name}_{tag}.nii.gz"
            write_image(to_image(getattr(result, name), result.geometry), tmp / files[name], description=description)
        if preview:
            from ..phantom.preview import preview_files

            preview_files(str(tmp / files["ct"]), str(tmp / "preview.png"),
                          **{name: str(tmp / files[name]) for name in ("lobes", "airway", "vessels")},
                          description=ct_description, region=str(tmp / files["region"]))
            files["preview"] = "preview.png"
        if dicom:
            files["dicom"], dicom_record = _write_dicom(result, tmp, "edit", model_info, source_ct, series)
        sidecar = {"synthetic": source.synthetic, "edited": True, **result.metadata,
                   "source_ct": str(source_ct) if source_ct is not None else None, "model": model_info,
                   "geometry": result.geometry.to_dict(), "files": files, "versions": _versions(),
                   "notice": ("SYNTHETIC " if source.synthetic else "") + "EDITED CT: the input scan with the region "
                             "above replaced by content MedSyn generated for the report; not the original scan, not "
                             "for clinical use"}
        if dicom:
            sidecar["dicom"] = dicom_record
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, allow_nan=False), encoding="utf-8")
    return output.path / SIDECAR


DICOM_FOLDERS = {"generate": "SYNTHETIC_MedSyn_DICOM", "segment": "MedSyn_segmentation_DICOM",
                 "edit": "EDITED_MedSyn_DICOM"}


def _write_dicom(result, tmp: Path, mode: str, model_info: dict, source_ct: Path | None,
                 series: str | None) -> tuple[str, dict]:
    """The DICOM objects of a result (:func:`MedSynLib.io.dicom.write_dicom_result`) in their sub-folder; returns
    the folder's name and what the sidecar records of them."""
    from ..io import dicom, dicom_series

    kind = {"generate": "synthetic", "segment": "patient", "edit": "edited"}[mode]
    source = None if mode == "generate" else dicom_series.source_series(source_ct, series)
    mark = dicom.marking(kind, model_info, result.metadata.get("report"), result.metadata.get("seed"))
    masks = {name: getattr(result, name) for name in ("lobes", "airway", "vessels")}
    ct = {"generate": getattr(result, "ct_hu", None), "edit": getattr(result, "ct", None)}.get(mode)
    record = dicom.write_dicom_result(tmp / DICOM_FOLDERS[mode], result.geometry, masks, mark, ct, source)
    return DICOM_FOLDERS[mode], record
