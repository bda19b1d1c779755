"""Scene logic of the MedSyn Slicer module, importable without Qt.

Everything that touches the MRML scene or the ``medsyn`` process lives here, so that it runs (and is tested) with
only the ``slicer-core`` wheel: no ``slicer.app``, no ``qt`` import, no ``slicer.modules`` (the panel's sections,
dialogs and self-test need the application when they are called, not when they are imported).

- :mod:`.logic`         MedSynSlicerLogic: all the work of the module (the Widget only forwards to it)
- :mod:`.anatomy`       the part of the Logic that chooses the anatomy a run holds (Generate) or replaces (Edit)
- :mod:`.runs`          the panel's processes (a run, an import, the GPU probe) and each tab's status and messages
- :mod:`.messages`      the message area: warnings and refusals in the panel's words, "Use anyway"
- :mod:`.panelstate`    which controls apply now (enabled, shown, the run button's text and tooltip)
- :mod:`.examples`      example chest CT reports offered in the panel
- :mod:`.conditions`    segments of a segmentation -> condition label maps in the segmentation's reference geometry
- :mod:`.results`       a ``medsyn`` results folder -> CT volume + segmentation with names, colours, terminology
- :mod:`.dicomexport`   what Slicer's own DICOM export reads from a result: SYNTHETIC / EDITED series, patient, study
- :mod:`.models`        the models to choose from: title, licence, size, sampler defaults, measured times
- :mod:`.job`           a Generate / Segment run: settings, arguments, work folder, results folder
- :mod:`.process`       one ``medsyn`` process: start, stream events, cancel the whole process tree
- :mod:`.progress`      the command line's JSON event lines, progress text and fraction
- :mod:`.device`        which GPU the command line would use (a short probe process)
- :mod:`.dependencies`  which Python packages the command line needs, which are missing, and installing them
- :mod:`.sections`      the panel's anatomy and Settings sections (mixed into the Widget; no ``qt`` import)
- :mod:`.dialogs`       the questions to the user (licence, packages, weights folders; ``qt`` imported when shown)
- :mod:`.selftest`      the in-Slicer self-test's bodies (run by ``MedSynSlicerTest``)
- :mod:`.sceneutil`     module logics, subject hierarchy and view helpers that no-op without the application
"""

SYNTHETIC_ATTRIBUTE = "synthetic"
"""Node attribute set to ``"true"`` on everything the model generated."""

ATTRIBUTE_PREFIX = "MedSyn."
"""Prefix of the provenance node attributes (report, seed, model, model hash, settings, output folder)."""
