"""Example chest CT reports for the report drop-down, written as FINDINGS / IMPRESSION text like real reports.

The report text is the only thing that conditions the model besides the optional held anatomy, so the examples ask
only for what the packaged demo model's card says it renders: pleural effusions (its conditioning benchmark: 14x the
volume of a report without them, p < 0.001) and a normal chest. It follows heart size only weakly and does not
reproduce emphysema (Testing/test_docs_truth.py ties :data:`EXAMPLE_FINDINGS` to the card's measured tables).
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
        "atelectasis of both lower lobes. No pneumothorax. The heart is normal in size. No pericardial effusion. "
        "The central airways are patent.\n"
        "IMPRESSION: Large bilateral pleural effusions with bibasilar compressive atelectasis."
    ),
    "Moderate right pleural effusion": (
        "FINDINGS: There is a moderate right pleural effusion with compressive atelectasis of the right lower lobe. "
        "No left pleural effusion. No pneumothorax. The heart is normal in size. The central airways are patent.\n"
        "IMPRESSION: Moderate right pleural effusion."
    ),
}
"""Title -> report text, in drop-down order; the first is the default report."""

EXAMPLE_FINDINGS: dict[str, frozenset[str]] = {
    "Normal chest CT": frozenset(),
    "Large bilateral pleural effusions": frozenset({"effusion"}),
    "Moderate right pleural effusion": frozenset({"effusion"}),
}
"""Title -> the findings its report asks for (names of the conditioning benchmark's tables: effusion, cardiomegaly,
emphysema)."""

DEFAULT_REPORT = EXAMPLE_REPORTS["Normal chest CT"]
