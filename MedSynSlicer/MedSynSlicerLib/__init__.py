"""Scene logic of the MedSyn Slicer module, importable without Qt.

Everything that touches the MRML scene or the ``medsyn`` process lives here, so that it runs (and is tested) with
only the ``slicer-core`` wheel: no ``slicer.app``, no ``qt``, no ``slicer.modules``.

- :mod:`.logic`         MedSynSlicerLogic: all the work of the module (the Widget only forwards to it)
- :mod:`.examples`      example chest CT reports offered in the panel
- :mod:`.conditions`    segments of a segmentation -> condition label maps in the segmentation's reference geometry
- :mod:`.results`       a ``medsyn`` results folder -> CT volume + segmentation with names, colours, terminology
- :mod:`.dicomexport`   what Slicer's own DICOM export reads from a result: SYNTHETIC / EDITED series, patient, study
- :mod:`.models`        the models to choose from: title, licence, size, sampler defaults, measured times
- :mod:`.job`           a Generate / Segment run: settings, arguments, work folder, results folder
- :mod:`.process`       one ``medsyn`` process: start, stream events, cancel the whole process tree
- :mod:`.progress`      the command line's JSON event lines, progress text and fraction
- :mod:`.device`        which GPU the command line would use (a short probe process)
- :mod:`.dependencies`  which Python packages the command line needs and which are missing
- :mod:`.sceneutil`     module logics, subject hierarchy and view helpers that no-op without the application
"""

SYNTHETIC_ATTRIBUTE = "synthetic"
"""Node attribute set to ``"true"`` on everything the model generated."""

ATTRIBUTE_PREFIX = "MedSyn."
"""Prefix of the provenance node attributes (report, seed, model, model hash, settings, output folder)."""
