"""Coherent beam combining: phase-lock an N x N array of laser beams (HPS-RL's laser application).

HPS-RL (arXiv 2201.11182) tuned agents that control a laser system; this is a small, self-contained
version of that task. ``N x N`` beams from phase-controllable fibre amplifiers are tiled side by
side in one aperture (the near field) and focused by a lens; the focal plane (the far field) is
the 2-D Fourier transform of the near field. The beams add up on the axis only where their pistons
(constant phases) agree: in phase, the largest share of the power lands in one central lobe; with
random phases it spreads into a speckle of lobes. The agent sees the far field through a small
camera and moves the pistons until the central lobe holds at least ``threshold`` of its in-phase
power.

Physics, kept deliberately simple:

* Near field: beam ``j`` is a Gaussian (1/e^2 intensity diameter ``fill_factor`` x the pitch) or a
  round top-hat (diameter ``fill_factor`` x the pitch) sampled on ``pixels_per_beam`` pixels per
  pitch, times ``exp(i phi_j)``. Its far field is ``|FFT2|^2`` of the near field zero-padded to
  ``oversampling * N * pixels_per_beam`` pixels per side, so that the central lobe (first null at
  1 / (N x pitch)) is ``oversampling`` pixels wide in radius.
* Camera: the far field repeats, apart from a slowly varying envelope, every
  ``oversampling * N`` pixels (the grating lobes of the array); all that the pistons change is
  inside one such period. The camera sees exactly that period around the axis
  (``oversampling * N`` pixels square), normalised by the in-phase on-axis intensity, which no
  pixel can exceed; so the image lies in [0, 1].
* Combining efficiency: power inside a disk of radius ``oversampling / 2`` pixels around the axis
  (half the central lobe's null radius: a pinhole photodiode), divided by the same for perfectly
  phased beams. 1 means ideal; random phases give about 1.5 / N^2 on average.

What the camera cannot tell, and why the observation holds more than the image: the far-field
intensity does not change when every piston moves by the same amount (a global piston is
invisible, and harmless), nor when each piston is replaced by minus the piston of the beam
point-symmetric to it through the array's centre (the far field becomes its complex conjugate:
the twin-image ambiguity of phase retrieval). The same
image can therefore call for two different corrections. The observation adds what a controller
that dithers would know: the correction just applied (in units of ``phase_step``), the measured
efficiency and its change since the previous step. How the image changed under a known correction
tells the twins apart, and even without the image, "the last nudge lowered the efficiency: undo it"
is a policy.

Actions: ``action_type="continuous"`` (default): ``Box(-1, 1, (N*N,))``, the phase change of every
beam in units of ``phase_step`` (default pi/4). ``action_type="discrete"``: ``Discrete(2*N*N + 1)``,
action 0 changes nothing, ``1 + j`` raises beam ``j``'s phase by ``phase_step`` (default pi/8),
``1 + N*N + j`` lowers it; this is what hpsrl's PPO and DQN can drive.

Reward: ``efficiency - 1`` after each step, i.e. minus the fraction of the combinable power that
misses the pinhole, plus ``success_bonus`` on the step that reaches ``threshold``. Every step below
the threshold costs something, so the agent is paid for reaching it soon (a reward of plain
efficiency would pay it to keep an episode going instead), and the per-step reward is dense and
bounded, which PPO's value function learns easily.

An episode terminates when the efficiency reaches ``threshold`` (``info["is_success"]``) and is
truncated after ``max_episode_steps`` (the registration's, 200 by default). Initial pistons are
uniform in ``[-phase_error, phase_error)`` (default pi: fully random); with ``drift > 0`` every
piston also takes a Gaussian random step of that many radians per step (thermal drift of real fibre
amplifiers). Everything random comes from ``reset(seed=...)``'s generator.

``reset(options={"phases": ...})`` starts from given pistons (radians, ``N*N`` values, row-major).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

ENV_ID = "hpsrl/BeamCombining-v0"

ACTION_TYPES = ("continuous", "discrete")
PROFILES = ("gaussian", "tophat")


def _require(ok: bool, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"BeamCombiningEnv: {name} must be {allowed}, got {value!r}")


def wrap_phase(phi: np.ndarray) -> np.ndarray:
    """Phases wrapped into [-pi, pi)."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


class BeamCombiningEnv(gymnasium.Env):
    """Phase-lock ``n x n`` coherent beams from their far-field image; see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        n: int = 3,
        action_type: str = "continuous",
        phase_step: float | None = None,
        threshold: float = 0.9,
        phase_error: float = math.pi,
        drift: float = 0.0,
        success_bonus: float = 10.0,
        profile: str = "gaussian",
        fill_factor: float = 0.8,
        pixels_per_beam: int = 8,
        oversampling: int = 3,
        render_mode: str | None = None,
    ) -> None:
        _require(isinstance(n, int) and n >= 2, "n (beams per side)", "an integer >= 2", n)
        _require(action_type in ACTION_TYPES, "action_type", f"one of {ACTION_TYPES}", action_type)
        if phase_step is None:
            phase_step = math.pi / 4 if action_type == "continuous" else math.pi / 8
        _require(0 < phase_step <= math.pi, "phase_step", "in (0, pi] radians", phase_step)
        _require(0 < threshold <= 1, "threshold", "in (0, 1]", threshold)
        _require(0 <= phase_error <= math.pi, "phase_error", "in [0, pi] radians", phase_error)
        _require(drift >= 0, "drift", ">= 0 radians per step", drift)
        _require(success_bonus >= 0, "success_bonus", ">= 0", success_bonus)
        _require(profile in PROFILES, "profile", f"one of {PROFILES}", profile)
        _require(0 < fill_factor <= 1, "fill_factor", "in (0, 1]", fill_factor)
        _require(
            isinstance(pixels_per_beam, int) and pixels_per_beam >= 4,
            "pixels_per_beam",
            "an integer >= 4",
            pixels_per_beam,
        )
        # The camera must sample the array factor at or above Nyquist: >= 2N - 1 pixels per period.
        _require(
            isinstance(oversampling, int) and oversampling >= 2,
            "oversampling",
            "an integer >= 2",
            oversampling,
        )
        _require(
            render_mode is None or render_mode in self.metadata["render_modes"],
            "render_mode",
            f"None or one of {self.metadata['render_modes']}",
            render_mode,
        )
        self.n = n
        self.action_type = action_type
        self.phase_step = float(phase_step)
        self.threshold = float(threshold)
        self.phase_error = float(phase_error)
        self.drift = float(drift)
        self.success_bonus = float(success_bonus)
        self.render_mode = render_mode
        beams = n * n

        # -- Optics: one beam's sub-aperture, the FFT grid, the camera and the pinhole ----------
        p = pixels_per_beam
        centre = (np.arange(p) - (p - 1) / 2) / p  # pixel centres in units of the pitch
        r2 = centre[:, None] ** 2 + centre[None, :] ** 2
        if profile == "gaussian":  # field exp(-r^2/w^2): 1/e^2 intensity radius w
            self._aperture = np.exp(-r2 / (fill_factor / 2) ** 2)
        else:  # a round top-hat: the diameter is fill_factor pitches
            self._aperture = (r2 <= (fill_factor / 2) ** 2).astype(np.float64)
        _require(self._aperture.any(), "fill_factor", "large enough to light a pixel", fill_factor)
        self._grid = oversampling * n * p
        self.camera_pixels = oversampling * n
        # Rows/columns of the FFT output that the camera sees: one grating period around the axis.
        offsets = np.arange(self.camera_pixels) - self.camera_pixels // 2
        self._camera_lines = offsets % self._grid
        radius = oversampling / 2
        self._pinhole = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2
        ideal = self._camera(np.ones(beams, dtype=np.complex128))
        self._peak = float(ideal[self.camera_pixels // 2, self.camera_pixels // 2])
        self._ideal_power = float(ideal[self._pinhole].sum())

        # -- Spaces -----------------------------------------------------------------------------
        if action_type == "continuous":
            self.action_space: spaces.Space = spaces.Box(-1.0, 1.0, (beams,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(2 * beams + 1)
        image = self.camera_pixels**2
        low = np.concatenate([np.zeros(image), -np.ones(beams), [0.0, -1.0]])
        high = np.concatenate([np.ones(image), np.ones(beams), [1.0, 1.0]])
        self.observation_space = spaces.Box(
            low.astype(np.float32), high.astype(np.float32), dtype=np.float32
        )

        self.phases = np.zeros(beams)
        self._phasors = np.ones(beams, dtype=np.complex128)
        self.efficiency = 1.0
        self._image = ideal / self._peak
        self._last_change = np.zeros(beams)
        self._efficiency_change = 0.0

    # -- Physics --------------------------------------------------------------------------------

    def _camera(self, phasors: np.ndarray) -> np.ndarray:
        """Far-field intensity on the camera (unnormalised) for the beams' ``exp(i phi)``."""
        n, p = self.n, self._aperture.shape[0]
        # Row-major beams: near[(row, y), (column, x)] = phasor[row, column] * aperture[y, x]
        near = phasors.reshape(n, 1, n, 1) * self._aperture[None, :, None, :]
        near = near.reshape(n * p, n * p)
        # The 2-D FFT of the near field zero-padded to the grid (where the array sits in the grid
        # only adds a linear phase to the far field, not a change of intensity), done as its two
        # 1-D passes keeping only the camera's columns, then rows: the same numbers as
        # fft2(near, s=(grid, grid)) cropped, in half the time.
        rows = np.fft.fft(near, n=self._grid, axis=1)[:, self._camera_lines]
        far = np.fft.fft(rows, n=self._grid, axis=0)[self._camera_lines, :]
        return far.real**2 + far.imag**2

    def combining_efficiency(self, phases: np.ndarray) -> float:
        """Pinhole power for ``phases`` (``n*n`` radians) over the in-phase pinhole power."""
        intensity = self._camera(np.exp(1j * np.asarray(phases, dtype=np.float64)))
        return float(intensity[self._pinhole].sum()) / self._ideal_power

    def _measure(self) -> None:
        self._phasors = np.exp(1j * self.phases)
        intensity = self._camera(self._phasors)
        self._image = intensity / self._peak
        self.efficiency = float(intensity[self._pinhole].sum()) / self._ideal_power

    def _obs(self) -> np.ndarray:
        image, beams = self.camera_pixels**2, self.n * self.n
        obs = np.empty(image + beams + 2, dtype=np.float32)
        np.clip(self._image.ravel(), 0.0, 1.0, out=obs[:image])  # rounding may pass 1 by 1e-16
        obs[image : image + beams] = self._last_change / self.phase_step
        obs[-2] = min(self.efficiency, 1.0)
        obs[-1] = min(max(self._efficiency_change, -1.0), 1.0)
        return obs

    def _info(self) -> dict[str, Any]:
        # The residual error is measured from the best global piston, which costs nothing.
        residual = np.angle(self._phasors * self._phasors.sum().conjugate())
        return {
            "efficiency": self.efficiency,
            "is_success": self.efficiency >= self.threshold,
            "phase_error_rms": float(np.sqrt(np.mean(residual**2))),
        }

    # -- gymnasium API --------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        beams = self.n * self.n
        if options and options.get("phases") is not None:
            phases = np.asarray(options["phases"], dtype=np.float64).ravel()
            if phases.shape != (beams,) or not np.isfinite(phases).all():
                raise ValueError(
                    f"BeamCombiningEnv.reset: options['phases'] must be {beams} finite "
                    f"radians, got {options['phases']!r}"
                )
            self.phases = wrap_phase(phases)
        else:
            self.phases = self.np_random.uniform(-self.phase_error, self.phase_error, beams)
        self._last_change = np.zeros(beams)
        self._measure()
        self._efficiency_change = 0.0
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        beams = self.n * self.n
        if self.action_type == "continuous":
            change = np.clip(np.asarray(action, dtype=np.float64).ravel(), -1.0, 1.0)
            change = change * self.phase_step
        else:
            a = int(action)
            if not 0 <= a <= 2 * beams:
                raise ValueError(f"BeamCombiningEnv.step: action {a} not in [0, {2 * beams}]")
            change = np.zeros(beams)
            if a:
                change[(a - 1) % beams] = self.phase_step if a <= beams else -self.phase_step
        self.phases = self.phases + change
        if self.drift:
            self.phases += self.np_random.normal(0.0, self.drift, beams)
        self.phases = wrap_phase(self.phases)
        before = self.efficiency
        self._measure()
        self._last_change = change
        self._efficiency_change = self.efficiency - before
        success = self.efficiency >= self.threshold
        reward = self.efficiency - 1.0 + (self.success_bonus if success else 0.0)
        return self._obs(), float(reward), success, False, self._info()

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the pistons (hue) beside the far field (grey, gamma 0.5), 192 px high."""
        if self.render_mode != "rgb_array":
            return None
        scale = 192 // self.n
        hue = self.phases.reshape(self.n, self.n)[..., None] + np.array([0, 2, 4]) * np.pi / 3
        near = np.kron(0.5 + 0.5 * np.cos(hue), np.ones((scale, scale, 1)))
        zoom = 192 // self.camera_pixels
        far = np.sqrt(np.clip(self._image, 0.0, 1.0))[..., None].repeat(3, axis=2)
        far = np.kron(far, np.ones((zoom, zoom, 1)))
        height = max(near.shape[0], far.shape[0])
        canvas = np.zeros((height, near.shape[1] + 8 + far.shape[1], 3))
        canvas[: near.shape[0], : near.shape[1]] = near
        canvas[: far.shape[0], near.shape[1] + 8 :] = far
        return (255 * canvas).astype(np.uint8)


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:BeamCombiningEnv", max_episode_steps=200)
