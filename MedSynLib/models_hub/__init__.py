"""Model storage: this project's format (safetensors + JSON config + sha256), registry and official imports."""
