"""MedSynLib: text-guided, anatomy-aware synthesis of 3D chest CT (MedSyn, IEEE TMI 2024).

Rooms (arrows point one way): ``models`` <- ``diffusion`` <- ``pipelines`` <- ``cli``;
``io`` and ``modelstore`` serve the pipelines; ``phantom`` and ``data`` feed training and evaluation.
"""

__version__ = "0.1.0"

CHANNELS = ("ct", "lobes", "airway", "vessels")
"""The four jointly generated channels, in model order (official channel indices 0..3)."""
