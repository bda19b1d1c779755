"""Diffusion: cosine schedule, x0 objective, samplers, denoisers (guidance, super-resolution, tiling), the sampling
loop and holding of known channels."""

from .denoisers import Denoiser, GuidedDenoiser, SuperResDenoiser, TiledSuperRes, upsample_lowres
from .samplers import SAMPLERS, DDIMSampler, DPMSolverPP2M, Sampler, make_sampler, official_time_grid
from .sampling import HeldChannels, draw_noise, hold_channels, sample
from .schedule import TIME_SCALE, add_noise, cosine_alpha_bar, eps_from_x0, x0_from_eps, x0_loss

__all__ = [
    "cosine_alpha_bar", "add_noise", "eps_from_x0", "x0_from_eps", "x0_loss", "TIME_SCALE",
    "Sampler", "DDIMSampler", "DPMSolverPP2M", "SAMPLERS", "make_sampler", "official_time_grid",
    "Denoiser", "GuidedDenoiser", "SuperResDenoiser", "TiledSuperRes", "upsample_lowres",
    "HeldChannels", "hold_channels", "sample", "draw_noise",
]
