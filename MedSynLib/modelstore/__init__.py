"""Model storage: this project's format (safetensors + JSON config + sha256), model folders and the registry.

Nothing is downloaded: models are packaged with the extension, installed under ``$MEDSYN_HOME/models``, or
converted from the official checkpoints by :mod:`MedSynLib.official.importer`.
"""
