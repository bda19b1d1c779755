"""Scene logic of the MedSyn Slicer module, importable without Qt.

Everything that touches the MRML scene or the ``medsyn`` process lives here, so that it runs (and is tested) with
only the ``slicer-core`` wheel: no ``slicer.app``, no ``qt``, no ``slicer.modules``.

- :mod:`.examples`      example chest CT reports offered in the panel
- :mod:`.conditions`    segments of a segmentation -> condition label maps in the segmentation's reference geometry
- :mod:`.results`       a ``medsyn`` results folder -> CT volume + segmentation with names, colours, terminology
- :mod:`.runner`        the ``medsyn`` command line in a separate process: arguments, JSON progress, cancel
- :mod:`.dependencies`  which Python packages the command line needs and which are missing
- :mod:`.sceneutil`     module logics, subject hierarchy and view helpers that no-op without the application
"""

SYNTHETIC_ATTRIBUTE = "synthetic"
"""Node attribute set to ``"true"`` on everything the model generated."""

ATTRIBUTE_PREFIX = "MedSyn."
"""Prefix of the provenance node attributes (report, seed, model, model hash, settings, output folder)."""
