"""The model card template (Hugging Face card convention): prose only; ``${...}`` fields are filled in by
:func:`MedSynLib.modelstore.card.render_model_card` with names, sizes and measured numbers."""

MODEL_CARD = """\
---
license: ${license_id}
library_name: medsyn
pipeline_tag: text-to-3d
tags:
- medical-imaging
- computed-tomography
- chest-ct
- 3d
- diffusion
- text-to-image
- synthetic-data
datasets:${datasets}
---

# ${title}

${statement}

## Model details
- A MedSyn model (Xu et al., IEEE TMI 2024): a report text encoder, a 64³ text-conditioned diffusion stage that
  generates CT, lobes, airway and vessels jointly, and a super-resolution diffusion stage, in the MedSynLib model
  folder format `${format}` (`model.json`, safetensors weights with their sha256).
- Text encoder: BERT, ${text_layers} layers, hidden ${text_hidden}, vocabulary ${text_vocab}.
- Low-res stage: `LowResUNet` ${lowres_unet}, ${lowres_parameters} parameters.
- Super-resolution stage: `SuperResUNet` ${superres_unet}, ${superres_parameters} parameters.
- Grid: ${grid}; low-res grid every ${lowres_factor}th voxel. Space: ${space}.
- Sampler defaults (used unless the user overrides them): ${defaults}.
- Licence: ${license}.

## Uses
### Intended use
Research and teaching: generating synthetic chest CT volumes with lobe, airway and vessel masks from a radiology
report, conditioning generation on known anatomy, segmenting a CT by holding its CT channel, and studying these
methods. Every CT the model draws is synthetic and is marked so (file names, image metadata, `medsyn.json`);
masks segmented from a patient's CT are not, and name that CT.

### Out-of-scope use
Diagnosis, treatment planning or any clinical decision; passing generated images off as patient data; training
or validating clinical models without checking that the synthetic data are fit for that purpose. Quality outside
the training data's population, scanners and report wording is unknown.

## How to get started
```
medsyn generate --model ${name} --report "FINDINGS: Small right pleural effusion. IMPRESSION: Effusion." --out result
```
```python
import MedSynLib

model = MedSynLib.load_model("${name}", "cpu")
```

## Training data
[More information needed]

## Training procedure
| part | steps | final loss | wall time |
|---|---|---|---|
${training_table}

[More information needed]

## Evaluation
Measured with `python -m MedSynLib.eval --model ${name} --card MODEL_FOLDER` (the conditioning benchmark); each
run adds its tables below and its numbers as JSON beside this card. Not evaluated when no table follows.

## Limitations
[More information needed]

## Citation
```bibtex
@article{medsyn2024,
  title   = {MedSyn: Text-guided Anatomy-aware Synthesis of High-Fidelity 3D CT Images},
  author  = {Xu, Yanwu and Sun, Li and Peng, Wei and Jia, Shuyue and Morrison, Katelyn and Perer, Adam and
             Zandifar, Afrooz and Visweswaran, Shyam and Eslami, Motahhare and Batmanghelich, Kayhan},
  journal = {IEEE Transactions on Medical Imaging},
  year    = {2024},
  doi     = {10.1109/TMI.2024.3415032}
}
```
"""
