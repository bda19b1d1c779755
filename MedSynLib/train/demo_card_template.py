"""The demo model's own card sections (training data, procedure, limitations); ``${...}`` fields are filled in
from :func:`MedSynLib.train.demo.card_fields` and the measured training numbers."""

DEMO_CARD_NOTES = """\
## Training data
Procedural chest CT phantoms (`medsyn phantoms`, `MedSynLib.phantom`): ${lowres_cases} cases at 64³ / 4 mm for the
text encoder and the low-res stage, ${sr_cases} cases at 256³ / 1 mm for the super-resolution stage (64³ crops);
master seed ${seed}. Reports use only the "train" half of the report templates (`wording="train"`), so that the
benchmark below can prompt with wordings the model never saw. Each low-res case has ${report_variants} reports
(`report.txt` and paraphrases of the same findings in other "train" templates, `report_variants`); the low-res
stage draws one per training step and the text encoder trains on all of them (held out by case). No patient data.

## Training procedure
| part | steps | final loss | wall time |
|---|---|---|---|
${training_table}

Hardware: ${hardware}. Text encoder: ${text_recipe}, trained from scratch (WordPiece vocabulary learnt on the
phantom reports; masked-language modelling + Findings/Impression pairing). Both diffusion stages: AdamW, bf16
autocast, gradient clipping 1, EMA 0.995, space-to-depth 4 (the low-res stage runs on a 16³ grid of 4³-voxel blocks,
the super-resolution stage on a 64³ grid); classifier-free-guidance text dropout 0.1. Low-res: ${lowres_train},
trained in phases ${lowres_phases} (a cosine decay to 0.1 lr at the first, then the same run resumed with the full
budget); super-resolution: ${superres_train} (constant lr). The packaged weights are the EMA weights, stored as
float16.

Reproduce: `python -m MedSynLib.train.demo --work runs/demo --package Resources/Models/medsyn-demo` (one command,
resumable; its defaults are the budgets above): text encoder, then low-res stage, then super-resolution stage, each
from scratch with 2 torch threads. Resuming gives the same weights as an uninterrupted run; another CPU or thread
count may round differently. The packaged weights were trained on volumes placed by preprocessing version 2 (each
phantom re-centred on its lungs and airways, 0 to 8 mm from its own framing); the library now uses version 3 for
training and inference alike (a volume of the box's size keeps its framing), so a replay trains on volumes shifted
by up to 8 mm from the packaged run's and gives other weights (docs/experiments.md in the repository).

## Limitations
- Trained on procedural phantoms only: the images, the anatomy and the report wording are much simpler than
  clinical CT. It is a demonstration of the pipeline, not a model of real patients.
- Fine texture and lung density: the low-res stage hardly uses the detail of its input at any noise level (error
  in the CT channel, mean square in model units, 0.026 at t = 0, where the input itself is off by 0.00016; 0.029 at
  t = 0.5), so lung parenchyma comes out smoother and brighter than in the phantoms and emphysema (%LAA-950) is not
  reproduced. Measured on 6 training cases with severe emphysema (%LAA-950 28.1 % at 64³): its prediction of the
  clean volume from a nearly noise-free input (diffusion time 0.02) has 5.1 % with the emphysema wording and 5.2 %
  without, and lungs 50 HU brighter than the input.
- Text: the effusion wording is followed strongly in the training templates and in held-out templates (tables
  below) and less in free paraphrases with words the reports never use; heart size only weakly (CTR p 0.25 in
  held-out templates, 0.068 in training ones; the training phantoms with cardiomegaly have CTR 0.56-0.63). The text
  encoder is small and trained from scratch on phantom reports.
- Effusion volume from the CT is measured on one grid of about 4 mm whatever the CT's resolution (`analysis_grid`,
  block means of the CT): the README's quick-start sample (large bilateral effusions, seed 1) reads 1,314 mL on its
  64³ result and 1,638 mL on its 256³ result. On the native 1 mm grid the generated fluid's voxel texture falls in
  and out of the fluid HU range (7 mL by the same rules).
- Lobe maps: the official single lobe channel passes through the labels in between wherever a lobe meets the
  background or a lobe two labels away, so rounding alone leaves rims of wrong labels along the lung border and the
  fissures, and noise in the channel leaves specks of lobe labels outside the lungs. The pipeline drops lung pieces
  under 5 mL (`drop_lobe_islands`) and votes the rims away (`majority_lobes`: each lung voxel takes the most common
  label of its 20 mm cube); neither is part of the official method. Table V below is measured that way.
"""
