"""Camera frames as mp4 video (PyAV, FFmpeg's libraries): one stream per camera and file, episodes
one after another, frame k of a file at time k / fps.

The default encoding is LeRobot's own: AV1 (libsvtav1), yuv420p, constant quality crf 30, a key
frame every 2 frames (so any frame decodes after at most one other). Video is lossy: the round
trip changes pixels (docs/lerobot.md states by how much); yuv444p at a low crf comes closest.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lerobot_format.layout import VIDEO_PATH, FormatError, chunk_and_file

# SVT-AV1 prints its whole configuration on every encoder it opens unless told not to (1 = errors)
os.environ.setdefault("SVT_LOG", "1")

CODECS = ("libsvtav1", "h264", "hevc")
PIX_FMTS = ("yuv420p", "yuv444p")
TOLERANCE_S = 1e-4  # a frame's time may differ this much from frame_index / fps (LeRobot's default)


class CameraVideos:
    """The video files of one camera key: frames are appended episode by episode; a new file starts
    at an episode boundary once the current one is past `max_bytes`."""

    def __init__(self, root: Path, video_key: str, fps: int, height: int, width: int, codec: str = "libsvtav1",
                 crf: int = 30, pix_fmt: str = "yuv420p", max_bytes: int = 200 * 1024 * 1024):
        if pix_fmt == "yuv420p" and (height % 2 or width % 2):
            raise FormatError(f"camera {video_key}: {width}x{height} frames cannot be yuv420p video (odd size); "
                              f"export with --pix-fmt yuv444p")
        self.root, self.video_key, self.fps, self.height, self.width = root, video_key, fps, height, width
        self.codec, self.crf, self.pix_fmt, self.max_bytes = codec, crf, pix_fmt, max_bytes
        self.n_files = 0
        self._container = self._stream = self._path = None
        self._frames_in_file = self._bytes_in_file = 0

    def start_episode(self) -> dict:
        """Where the next episode goes: its chunk and file index and its from_timestamp."""
        if self._container is not None and self._bytes_in_file >= self.max_bytes:
            self._close_file()
        if self._container is None:
            self._open_file()
        where = chunk_and_file(self.n_files - 1)
        return {f"videos/{self.video_key}/chunk_index": where["chunk_index"],
                f"videos/{self.video_key}/file_index": where["file_index"],
                f"videos/{self.video_key}/from_timestamp": self._frames_in_file / self.fps}

    def add(self, image: np.ndarray) -> None:
        if image.shape != (self.height, self.width, 3):
            raise FormatError(f"camera {self.video_key}: a {image.shape[1]}x{image.shape[0]} frame in a "
                              f"{self.width}x{self.height} video (all frames of a camera must be one size)")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self._frames_in_file
        self._frames_in_file += 1
        self._mux(self._stream.encode(frame))

    def end_episode(self) -> dict:
        return {f"videos/{self.video_key}/to_timestamp": self._frames_in_file / self.fps}

    def close(self) -> None:
        if self._container is not None:
            self._close_file()

    def _open_file(self) -> None:
        self._path = self.root / VIDEO_PATH.format(video_key=self.video_key, **chunk_and_file(self.n_files))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._path), "w")
        options = {"crf": str(self.crf), "g": "2"}
        self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps), options=options)
        self._stream.pix_fmt = self.pix_fmt
        self._stream.width, self._stream.height = self.width, self.height
        self._frames_in_file = self._bytes_in_file = 0
        self.n_files += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            self._bytes_in_file += packet.size  # what the file will hold (the muxer buffers its writes)
            self._container.mux(packet)

    def _close_file(self) -> None:
        self._mux(self._stream.encode(None))
        self._container.close()
        self._container = self._stream = None


def video_info(path: Path) -> dict:
    """The ``info`` of a video feature in info.json, read from the file as LeRobot reads it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name,
                "video.pix_fmt": stream.codec_context.pix_fmt, "video.is_depth_map": False,
                "video.fps": int(stream.base_rate), "video.channels": 3, "has_audio": False}


def read_episode_frames(path: Path, from_timestamp: float, n: int, fps: int,
                        size: tuple[int, int] | None = None) -> np.ndarray:
    """The n frames [n, H, W, 3] uint8 of an episode that starts at `from_timestamp` in `path`.
    Raises FormatError on a missing, truncated or undecodable file and on frames that are not at
    ``from_timestamp + k / fps`` (a video whose rate is not the dataset's fps)."""
    if not path.exists():
        raise FormatError(f"video {path} is missing")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if size is not None and (stream.height, stream.width) != size:
                raise FormatError(f"video {path} is {stream.width}x{stream.height}, its feature declares "
                                  f"{size[1]}x{size[0]}")
            if from_timestamp > 0:
                container.seek(int(from_timestamp / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t < from_timestamp - TOLERANCE_S:
                    continue
                k = len(frames)
                if k == n:
                    break
                _check_frame_time(path, t, from_timestamp + k / fps, k, fps)
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, IndexError) as e:
        raise FormatError(f"video {path} cannot be decoded (truncated or corrupt?): {e}") from None
    if len(frames) != n:
        raise FormatError(f"video {path} has {len(frames)} of the {n} frames expected from {from_timestamp:.3f} s "
                          f"(truncated or corrupt?)")
    return np.stack(frames)


def _check_frame_time(path: Path, t: float, expected: float, k: int, fps: int) -> None:
    if abs(t - expected) > TOLERANCE_S:
        raise FormatError(f"video {path}: frame {k} of the episode is at {t:.4f} s, but fps {fps} puts it at "
                          f"{expected:.4f} s: the video's frame rate is not the dataset's fps")
