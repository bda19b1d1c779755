"""Example chest CT reports for the report drop-down, written as FINDINGS / IMPRESSION text like real reports.

The report text is the only thing that conditions the model besides the optional held anatomy, so the examples
describe findings the model was trained to render (effusions, cardiomegaly, emphysema, consolidation).
"""

from __future__ import annotations

EXAMPLE_REPORTS: dict[str, str] = {
    "Normal chest CT": (
        "FINDINGS: The lungs are clear without focal consolidation, nodule or mass. No pleural effusion or "
        "pneumothorax. The central airways are patent. The heart is normal in size. No pericardial effusion. "
        "No mediastinal or hilar lymphadenopathy. The visualized osseous structures are unremarkable.\n"
        "IMPRESSION: No acute cardiopulmonary abnormality."
    ),
    "Large bilateral pleural effusions": (
        "FINDINGS: Large bilateral pleural effusions, right greater than left, with adjacent compressive "
        "atelectasis of both lower lobes. No pneumothorax. The heart is mildly enlarged. No pericardial effusion. "
        "The central airways are patent.\n"
        "IMPRESSION: Large bilateral pleural effusions with bibasilar compressive atelectasis."
    ),
    "Cardiomegaly": (
        "FINDINGS: The heart is markedly enlarged with a cardiothoracic ratio above 0.6. No pericardial effusion. "
        "The main pulmonary artery is mildly dilated. The lungs are clear. No pleural effusion.\n"
        "IMPRESSION: Cardiomegaly. No acute pulmonary abnormality."
    ),
    "Emphysema with bullae": (
        "FINDINGS: Severe centrilobular and paraseptal emphysema with upper lobe predominance. Large bullae in both "
        "apices, the largest in the right upper lobe. Bronchial wall thickening. No consolidation or pleural "
        "effusion. The heart is normal in size.\n"
        "IMPRESSION: Severe upper lobe predominant emphysema with apical bullae."
    ),
    "Right lower lobe consolidation": (
        "FINDINGS: Dense consolidation in the right lower lobe with air bronchograms. Small right pleural effusion. "
        "The left lung is clear. The heart is normal in size. Mildly enlarged right hilar lymph nodes, likely "
        "reactive.\n"
        "IMPRESSION: Right lower lobe consolidation compatible with pneumonia. Small right pleural effusion."
    ),
}
"""Title -> report text, in drop-down order; the first is the default report."""

DEFAULT_REPORT = EXAMPLE_REPORTS["Normal chest CT"]
