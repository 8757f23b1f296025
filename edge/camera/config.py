"""The ``[devices.camera]`` section of a station config: a camera as a barcode reader.

Kept apart from the reader so loading a station config does not import OpenCV.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.ids import Identifier


class CameraConfig(BaseModel):
    """A camera that stands in for a serial scanner: every new code becomes a ``scan``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        min_length=1,
        description=(
            "a V4L2 device index or /dev/videoN, an rtsp:// or http(s):// URL, a video file, "
            "or a folder of images read in name order"
        ),
    )
    reader: Identifier
    dedup_window_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="a code seen again before it was out of sight this long is the same scan",
    )
    max_fps: float = Field(default=5.0, gt=0, le=60, description="frames decoded per second")
    waybill_only: bool = Field(
        default=False, description="report only codes shaped like a waybill number"
    )
    effort: Literal["quick", "full"] = Field(
        default="quick",
        description=(
            "quick: each frame as it is, with more contrast and upscaled ×2 (a camera sees "
            "a label in many frames); full: the whole ladder, turned labels too, at about "
            "2.5 times the CPU per empty frame (docs/PERFORMANCE.md)"
        ),
    )
    reconnect_max_s: float = Field(
        default=30.0, ge=0.1, le=600, description="longest wait between reconnect attempts"
    )
