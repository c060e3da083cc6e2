"""How long a Fargate task takes from launch to its first receive, as a function of the image.

    task start = provisioning + image pull + container start

- **Provisioning** (placement, ENI attachment, agent hand-off) does not depend on the image:
  ``PROVISION_MEAN_S`` (sd ``PROVISION_SD_S``, at least ``PROVISION_MIN_S``). It is calibrated so
  that the old 817 MB image reproduces the simulator's earlier constant, 60 s on average
  (DESIGN.md: "real Fargate takes about a minute").
- **Image pull**: Fargate caches no layers between tasks, so every start downloads and unpacks
  the whole compressed image. ``PULL_BYTES_PER_S`` (25 MB/s of compressed bytes, download,
  decompression and unpacking together on a 2 vCPU task) is an assumption, not a measurement
  from this offline machine: change it with ``python -m autoscaling.wake --pull-mb-per-s``.
- **Container start** is measured: ``podman run`` -> the worker's first received job
  (``.ci/container_smoke.py``, ``start_to_first_receive_s``), on the CI machine.

Image sizes are measured with ``podman image inspect`` (uncompressed) and ``podman save | gzip -6``
(compressed, what a registry stores and a task pulls); README "Docker" has the commands.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MB = 1_000_000
PULL_BYTES_PER_S = 25 * MB
PROVISION_SD_S = 10.0
PROVISION_MIN_S = 20.0


@dataclass(frozen=True, slots=True)
class Image:
    """A worker image as a task start sees it."""

    name: str
    uncompressed_bytes: int
    compressed_bytes: int
    container_start_s: float


# Measured on the CI machine (.ci/container_smoke.py, podman 4.3, the oci tool's local base
# images): the Dockerfile before the minimal build (Debian's ffmpeg package and everything it
# depends on), and the one it builds now (the minimal FFmpeg of its first stage).
OLD_IMAGE = Image(
    "Debian ffmpeg package",
    uncompressed_bytes=817_448_960,
    compressed_bytes=394_168_055,
    container_start_s=1.1,
)
NEW_IMAGE = Image(
    "minimal ffmpeg build",
    uncompressed_bytes=264_231_968,
    compressed_bytes=108_699_094,
    container_start_s=1.2,
)


def pull_s(image: Image, pull_bytes_per_s: float = PULL_BYTES_PER_S) -> float:
    return image.compressed_bytes / pull_bytes_per_s


# Calibration: the old image's mean start stays the previous constant (60 s).
PROVISION_MEAN_S = 60.0 - pull_s(OLD_IMAGE) - OLD_IMAGE.container_start_s


@dataclass(frozen=True, slots=True)
class StartupModel:
    """Draws task start times for one image; ``mean_s`` is the expectation (before the floor)."""

    image: Image = NEW_IMAGE
    pull_bytes_per_s: float = PULL_BYTES_PER_S
    provision_mean_s: float = PROVISION_MEAN_S
    provision_sd_s: float = PROVISION_SD_S

    @property
    def pull_s(self) -> float:
        return pull_s(self.image, self.pull_bytes_per_s)

    @property
    def mean_s(self) -> float:
        return self.provision_mean_s + self.pull_s + self.image.container_start_s

    def sample_s(self, rng: random.Random) -> float:
        provision = max(PROVISION_MIN_S, rng.gauss(self.provision_mean_s, self.provision_sd_s))
        return provision + self.pull_s + self.image.container_start_s
