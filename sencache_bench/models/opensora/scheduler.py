"""Open-Sora 1.2's rectified-flow sampler ("rflow") as a diffusers scheduler (shared OPENSORA.md, "Sampling";
hpcaitech/Open-Sora ``opensora/v1.2``, ``opensora/schedulers/rf/__init__.py`` and ``rectified_flow.py``).

    t_i = T * (1 - i / n), i = 0..n-1 (T = 1000)
    timestep transform: s = t / T, s' = r s / (1 + (r - 1) s), r = sqrt(H W / 512^2) * sqrt(frames // 17 * 5)
        (H, W, frames in pixels; a single image, or fewer than 17 frames, counts 1)
    Euler: z <- z + v * (t'_i - t'_{i+1}) / T, with t'_n = 0

``sigmas`` = t' / T (with the final 0): x_t = (1 - sigma) x_0 + sigma * noise, so the harness's flow-matching
noising (SenCache calibration) applies. ``v`` points from noise to data (the opposite sign of diffusers'
FlowMatchEulerDiscreteScheduler's model output).
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput


def transform_ratio(height: int, width: int, num_frames: int, base_resolution: int = 512 * 512) -> float:
    """r = sqrt(H W / base) * sqrt(time ratio), time ratio = num_frames // 17 * 5 (1 for a single image).

    Under 17 frames the official ratio is 0 and its first step divides 0 by 0; here the time ratio is at least 1
    (the single-image value), so short test videos sample."""
    frames = 1 if num_frames == 1 else max(1, num_frames // 17 * 5)
    return math.sqrt(height * width / base_resolution) * math.sqrt(frames)


def transform(t: float, ratio: float, num_timesteps: int = 1000) -> float:
    s = t / num_timesteps
    return ratio * s / (1 + (ratio - 1) * s) * num_timesteps


class OpenSoraRFlowScheduler(SchedulerMixin, ConfigMixin):
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, use_timestep_transform: bool = True,
                 prediction_type: str = "flow_prediction"):
        self.timesteps = torch.tensor([])
        self.sigmas = torch.tensor([])
        self.num_inference_steps = None
        self._step_index = None
        self._begin_index = None

    def set_timesteps(self, num_inference_steps: int, device=None, height: int = 512, width: int = 512,
                      num_frames: int = 1) -> None:
        n, big = num_inference_steps, self.config.num_train_timesteps
        ts = [(1.0 - i / n) * big for i in range(n)]
        if self.config.use_timestep_transform:
            ratio = transform_ratio(height, width, num_frames)
            ts = [transform(t, ratio, big) for t in ts]
        self.timesteps = torch.tensor(ts, dtype=torch.float32, device=device)
        self.sigmas = torch.tensor([t / big for t in ts] + [0.0], dtype=torch.float32, device=device)
        self.num_inference_steps = n
        self._step_index = None

    @property
    def step_index(self):
        return self._step_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def _init_step_index(self, timestep) -> None:
        if self._begin_index is not None:
            self._step_index = self._begin_index
            return
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        self._step_index = int(torch.argmin((self.timesteps.cpu() - t).abs()))

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True):
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        dt = float(self.sigmas[i] - self.sigmas[i + 1])
        prev = (sample.float() + model_output.float() * dt).to(sample.dtype)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        s = (timesteps.float() / self.config.num_train_timesteps).view(-1, *[1] * (original.ndim - 1))
        return (1 - s) * original + s * noise

    def __len__(self):
        return self.config.num_train_timesteps
