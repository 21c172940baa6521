"""Media decoding in child processes: the wall time and the memory of a decode bounded for real.

Pillow and FFmpeg cannot be interrupted from Python, raise any exception type on crafted input,
and may allocate what a header asks for. So an item's images and video are decoded by a child
process (``python -m enrich.media.sandbox``) that

- runs with an address-space limit (``RLIMIT_AS``), so a bomb fails with ``MemoryError`` inside
  the child instead of taking the worker's memory;
- is killed when a decode passes its wall-time budget, and replaced;
- can crash (a decoder's segfault) without touching the worker;
- sends back only the downscaled RGB frames (at most ``work_pixels`` each).

The protocol is length-prefixed msgpack over the child's stdin and stdout. A pool holds one child
per concurrent caller; children start on first use and exit when their stdin closes.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgpack
from PIL import Image

from enrich.errors import BackendUnavailable, InvalidItem
from enrich.media.decode import MediaBudget, decode_images
from enrich.media.video import VideoSpec, keyframes

log = logging.getLogger(__name__)
_LEN = struct.Struct("<I")
MAX_REPLY_BYTES = 256 * 1024 * 1024  # far above 40 frames at the largest work size; a sanity bound
_PASSED_ENV = frozenset({"PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TMPDIR", "HOME"})


@dataclass(frozen=True)
class SandboxSpec:
    workers: int = 2  # children, one per concurrent caller
    timeout_s: float = 5.0  # wall time per item; the child is killed beyond it
    memory_mb: int = 1024  # the child's address-space limit (its own libraries take about 250 MB)
    isolated: bool = True  # False: decode in the calling thread (no time or memory bound; tests, tools)


def decode_media(images: Sequence[bytes], video: bytes | None, budget: MediaBudget,
                 spec: VideoSpec) -> list[Image.Image]:
    """An item's images, then its video's frames, decoded within ``budget`` (in this process)."""
    out = decode_images(images, budget)
    if video:
        out += keyframes(video, spec, budget)
    return out


# -- the child -----------------------------------------------------------------


def _read_exact(stream: Any, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _write(stream: Any, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    stream.write(_LEN.pack(len(data)) + data)
    stream.flush()


def _child_main() -> None:
    import resource

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies may reach the pipe
    head = _read_exact(stdin, _LEN.size)
    if head is None:
        return
    config = msgpack.unpackb(_read_exact(stdin, _LEN.unpack(head)[0]) or b"")
    budget, spec = MediaBudget(**config["budget"]), VideoSpec(**config["video"])
    limit = config["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    Image.MAX_IMAGE_PIXELS = budget.max_image_pixels  # Pillow's own bomb check, a second line behind ours
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours refuses those images first
    _write(stdout, {"ready": True})
    while True:
        head = _read_exact(stdin, _LEN.size)
        if head is None:
            return
        req = msgpack.unpackb(_read_exact(stdin, _LEN.unpack(head)[0]) or b"", raw=False)
        try:
            frames = decode_media(req["images"], req["video"], budget, spec)
            reply: dict[str, Any] = {"frames": [[f.width, f.height, f.tobytes()] for f in frames]}
            del frames
        except InvalidItem as err:
            reply = {"reason": err.reason, "detail": err.detail}
        except MemoryError:
            reply = {"reason": "media_memory_budget",
                     "detail": f"decoding needed more than the {config['memory_mb']} MB decoder limit"}
        except Exception as exc:  # noqa: BLE001 - any other failure is this item's, never the worker's
            reply = {"reason": "media_undecodable", "detail": f"{type(exc).__name__}: {exc}"}
        _write(stdout, reply)


# -- the parent ----------------------------------------------------------------


class _Child:
    def __init__(self, config: bytes) -> None:
        # Nothing of the worker's environment (Kafka credentials, tokens) reaches the process that parses
        # hostile bytes, and it runs in / so no relative path names a file of the worker's.
        env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV} | {"MALLOC_ARENA_MAX": "2",
                                                                             "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "enrich.media.sandbox"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True, cwd="/")
        self._send(config)
        self._receive(30.0)  # the ready message: imports done, limits set

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_LEN.pack(len(data)) + data)
        self.proc.stdin.flush()

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        buf = bytearray()
        need = _LEN.size
        header_done = False
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(need - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
            if not header_done and len(buf) >= _LEN.size:
                size = _LEN.unpack(bytes(buf[:_LEN.size]))[0]
                if size > MAX_REPLY_BYTES:
                    raise EOFError
                need, header_done = _LEN.size + size, True
        return msgpack.unpackb(bytes(buf[_LEN.size:]), raw=False)

    def decode(self, images: Sequence[bytes], video: bytes | None, timeout_s: float) -> dict[str, Any]:
        self._send(msgpack.packb({"images": list(images), "video": video}, use_bin_type=True))
        return self._receive(timeout_s)

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class MediaDecoder:
    """Decodes an item's media within the budget; thread-safe (one child per concurrent caller)."""

    def __init__(self, budget: MediaBudget = MediaBudget(), video: VideoSpec = VideoSpec(),
                 sandbox: SandboxSpec = SandboxSpec()) -> None:
        self.budget, self.video, self.sandbox = budget, video, sandbox
        self._config = msgpack.packb({"budget": asdict(budget), "video": asdict(video),
                                      "memory_mb": sandbox.memory_mb}, use_bin_type=True)
        self._idle: queue.LifoQueue[_Child | None] = queue.LifoQueue()
        for _ in range(sandbox.workers):
            self._idle.put(None)  # a slot; its child starts when first needed
        self._closed = False

    def decode(self, images: Sequence[bytes], video: bytes | None) -> list[Image.Image]:
        if not images and not video:
            return []
        if not self.sandbox.isolated:
            return decode_media(images, video, self.budget, self.video)
        child = self._idle.get()
        try:
            if child is None or not child.alive:
                child = self._start()
            reply = self._ask(child, images, video)
            if not child.alive:
                child = None
        except BaseException:
            if child is not None:
                child.kill()
            child = None
            raise
        finally:
            self._idle.put(child)
        if "reason" in reply:
            raise InvalidItem(str(reply["reason"]), str(reply.get("detail", "")), stage="preprocess")
        return [_image(w, h, data) for w, h, data in reply["frames"]]

    def _start(self) -> _Child:
        try:
            return _Child(self._config)
        except (TimeoutError, EOFError, OSError, ValueError) as exc:
            # not the item's fault: the batch waits and is retried like any unavailable backend
            raise BackendUnavailable(f"the media decoder process could not start: {type(exc).__name__}") from exc

    def _ask(self, child: _Child, images: Sequence[bytes], video: bytes | None) -> dict[str, Any]:
        timeout = self.sandbox.timeout_s
        try:
            return child.decode(images, video, timeout)
        except TimeoutError:
            child.kill()
            raise InvalidItem("media_decode_timeout", f"decoding took longer than {timeout:g}s; the decoder "
                              "was stopped", stage="preprocess") from None
        except (EOFError, OSError, ValueError):  # ValueError: msgpack's errors on a torn reply
            child.kill()
            code = child.proc.returncode
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"
            log.warning("media decoder died (%s) on an item; started another", how)
            raise InvalidItem("media_decoder_crashed", f"the decoder process died ({how}) on this item",
                              stage="preprocess") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                return
            if child is not None:
                child.kill()


def _image(width: int, height: int, data: bytes) -> Image.Image:
    if width < 1 or height < 1 or width * height * 3 != len(data):
        raise InvalidItem("media_undecodable", f"the decoder sent {len(data)} bytes for {width}x{height}",
                          stage="preprocess")
    return Image.frombytes("RGB", (width, height), data)


if __name__ == "__main__":
    _child_main()
