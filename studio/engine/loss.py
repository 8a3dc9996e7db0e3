"""The diffusion training objective: what the UNet should predict, and how each timestep counts."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_loss(scheduler, pred: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                   timesteps: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
    """Mean-squared error against the noise (ε-prediction) or the velocity (v-prediction), as the
    base model's scheduler says, per sample, optionally min-SNR weighted; then the batch mean."""
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if min_snr_gamma:
        loss = loss * min_snr_weights(scheduler, timesteps, min_snr_gamma)
    return loss.mean()


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ weighting (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting
    Strategy", 2023, §3.4): min(SNR, γ) / SNR for ε-prediction, / (SNR + 1) for v-prediction."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr
