"""Which GPU the ``medsyn`` process would use: a short probe process, read without blocking the panel."""

from __future__ import annotations

import json

from .process import MedSynProcess

_DEVICE_PROBE = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "    if torch.cuda.is_available():\n"
    "        free, total = torch.cuda.mem_get_info(0)\n"
    "        info = {'cuda': True, 'name': torch.cuda.get_device_name(0), 'free_gb': free / 2**30,\n"
    "                'total_gb': total / 2**30, 'torch': torch.__version__}\n"
    "    else:\n"
    "        info = {'cuda': False, 'torch': torch.__version__}\n"
    "except ImportError:\n"
    "    info = {'cuda': False, 'torch': None}\n"
    "print(json.dumps(info))\n"
)


def start_probe(python: str, env: dict[str, str]) -> MedSynProcess:
    """Start the probe (``python`` and ``env`` as for a run); poll it, then :func:`probe_result`."""
    return MedSynProcess([python, "-c", _DEVICE_PROBE], env=env).start()


def probe_result(process: MedSynProcess) -> dict:
    """``{"cuda", "name", "free_gb", "total_gb", "torch"}`` from a finished probe; raises if it failed."""
    lines = [line for line in process.stdout if line.strip().startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError("GPU detection failed: " + " ".join(list(process.log)[-3:]))
    return json.loads(lines[-1])


def describe_device(info: dict) -> str:
    if not info.get("torch"):
        return "PyTorch is not installed yet"
    if info.get("cuda"):
        return f"{info.get('name', 'GPU')}, {info.get('free_gb', 0):.1f} of {info.get('total_gb', 0):.1f} GB free"
    return "No CUDA GPU found: CPU only (slow)"
