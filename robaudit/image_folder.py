"""A test set as a ``.zip`` of class folders (the ImageFolder convention): ``cat/001.png``, ``dog/002.jpg``.

Labels are the class folders in sorted order, or the order of an optional ``classes.txt`` at the top
(one class name a line; it may list classes that have no folder, e.g. a subset of ImageNet's 1000).
One common top folder (``mydata/cat/001.png``, what "compress folder" makes) is looked through.

The archive is untrusted and is never extracted to disk; it is refused, with one line naming the
member, for: member names with ``..``, absolute paths or drive letters; symbolic links; encrypted
members; folders nested deeper than class/image; members that are not PNG or JPEG; a total
decompressed size over the cap (the sum the headers declare is checked before anything is read, and
the bytes actually read are counted too, since headers can lie); more images than the cap; an image
of more pixels than the cap (checked from its header before it is decoded); a corrupt image; mixed
image sizes (unless a resize and centre crop is declared). macOS and Windows litter (``__MACOSX/``,
``.DS_Store``, ``._*``, ``Thumbs.db``, ``desktop.ini``) is skipped rather than refused: zips made by
Finder or Explorer carry it without the user's knowledge.

Colour: images are 1-channel when every image is greyscale, else 3-channel (greyscale ones are
repeated over three channels, an alpha channel is dropped). 16-bit and float images are refused.
"""
from __future__ import annotations

import io
import re
import stat
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from robaudit.errors import RobauditError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASSES_FILE = "classes.txt"
LITTER_DIRS = ("__MACOSX",)
LITTER_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
MAX_CLASSES_FILE_BYTES = 1 << 20
MAX_PIXELS = 4096 * 4096          # one image; far above any test set, far below a decompression bomb
GREY_MODES = ("1", "L", "LA")
COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ImageFolder:
    x: np.ndarray              # (n, C, H, W) uint8
    y: np.ndarray              # (n,) int64
    class_names: list[str]     # label i is class_names[i]


def _member_path(info: zipfile.ZipInfo, name: str) -> PurePosixPath:
    """The member's path, or a refusal when it could escape a folder it were extracted to."""
    raw = info.filename
    text = raw.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise RobauditError(f"{name}: member {raw!r} has an absolute path; a test set's members are class/image")
    if ".." in text.split("/"):
        raise RobauditError(f"{name}: member {raw!r} has '..' in its path; a test set's members are class/image")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise RobauditError(f"{name}: member {raw!r} is a symbolic link; a test set holds image files only")
    if info.flag_bits & 0x1:
        raise RobauditError(f"{name}: member {raw!r} is encrypted")
    return PurePosixPath(text)


def _is_litter(path: PurePosixPath) -> bool:
    return (any(part in LITTER_DIRS for part in path.parts) or path.name in LITTER_FILES
            or path.name.startswith("._"))


def _layout(files: list[tuple[zipfile.ZipInfo, PurePosixPath]], name: str
            ) -> tuple[list[tuple[zipfile.ZipInfo, str, str]], zipfile.ZipInfo | None]:
    """(member, class, file name) for each image, and classes.txt, after looking through one common top folder."""
    tops = {p.parts[0] for _, p in files}
    if len(tops) == 1 and all(len(p.parts) >= 2 for _, p in files) and any(len(p.parts) == 3 for _, p in files):
        files = [(info, PurePosixPath(*p.parts[1:])) for info, p in files]
    images, classes_file = [], None
    for info, path in files:
        if len(path.parts) == 1 and path.name == CLASSES_FILE:
            classes_file = info
        elif len(path.parts) > 2:
            raise RobauditError(f"{name}: member {info.filename!r} nests deeper than class/image "
                                "(one folder per class, the images directly in it)")
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            raise RobauditError(f"{name}: member {info.filename!r} is not an image (PNG or JPEG); a test set "
                                f"holds class folders of images and optionally {CLASSES_FILE}")
        elif len(path.parts) == 1:
            raise RobauditError(f"{name}: image {info.filename!r} is not in a class folder "
                                "(put each class's images in a folder named after the class)")
        else:
            images.append((info, path.parts[0], path.name))
    return images, classes_file


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: list[int]) -> bytes:
    """The member's bytes, counted against what is left of the decompressed-size cap (``budget[0]``)."""
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(1 << 16):
                out += chunk
                budget[0] -= len(chunk)
                if budget[0] < 0 or len(out) > info.file_size:
                    raise RobauditError(f"{name}: member {info.filename!r} decompresses to more than its header "
                                        "declares, or past the cap on decompressed bytes")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
        # zipfile stops at the declared size and then finds the CRC wrong: a lying or damaged member.
        raise RobauditError(f"{name}: member {info.filename!r} is damaged ({str(exc)[:100]})") from None
    return bytes(out)


def _class_order(zf: zipfile.ZipFile, classes_file: zipfile.ZipInfo | None, folders: set[str], name: str,
                 budget: list[int]) -> list[str]:
    if classes_file is None:
        return sorted(folders)
    if classes_file.file_size > MAX_CLASSES_FILE_BYTES:
        raise RobauditError(f"{name}: {CLASSES_FILE} is over {MAX_CLASSES_FILE_BYTES} bytes")
    try:
        text = _read(zf, classes_file, name, budget).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RobauditError(f"{name}: {CLASSES_FILE} is not UTF-8 text") from None
    order = [line.strip() for line in text.splitlines() if line.strip()]
    seen: set[str] = set()
    for cls in order:
        if cls in seen:
            raise RobauditError(f"{name}: {CLASSES_FILE} lists {cls!r} twice")
        seen.add(cls)
    missing = sorted(folders - seen)
    if missing:
        raise RobauditError(f"{name}: class folder(s) {', '.join(repr(m) for m in missing[:5])} are not listed in "
                            f"{CLASSES_FILE}, which gives the label order")
    return order


def _decode(data: bytes, member: str, name: str, max_pixels: int, resize: int | None,
            crop: int | None) -> np.ndarray:
    """One image as an (H, W) or (H, W, 3) uint8 array, after the declared resize and centre crop."""
    from PIL import Image

    def opened() -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))

    try:
        image = opened()
        width, height = image.size
        if width * height > max_pixels:
            raise RobauditError(f"{name}: image {member!r} is {width}x{height}, over the cap of {max_pixels} pixels")
        image.verify()                       # checksums and structure; the image must be opened again after
        image = opened()
        image.load()
    except RobauditError:
        raise
    except MemoryError:
        raise
    except Exception as exc:   # Pillow raises many types (OSError, SyntaxError, ValueError, zlib.error...)
        why = "of another format, or damaged" if type(exc).__name__ == "UnidentifiedImageError" else str(exc)[:80]
        raise RobauditError(f"{name}: image {member!r} is not a readable PNG or JPEG ({why})") from None
    if image.mode in GREY_MODES:
        image = image.convert("L")
    elif image.mode in COLOUR_MODES:
        image = image.convert("RGB")
    else:
        raise RobauditError(f"{name}: image {member!r} has pixel mode {image.mode} (16-bit or float); "
                            "save 8-bit PNG or JPEG")
    if resize is not None or crop is not None:
        from torchvision import transforms

        if resize is not None:
            image = transforms.Resize(resize)(image)     # the shorter side to `resize`, as for ImageNet
        if crop is not None:
            if min(image.size) < crop:
                raise RobauditError(f"{name}: image {member!r} is {image.size[0]}x{image.size[1]}, smaller than "
                                    f"the {crop}x{crop} crop")
            image = transforms.CenterCrop(crop)(image)
    return np.asarray(image, dtype=np.uint8)


def read_image_folder(path: str | Path, *, max_images: int, max_bytes: int, max_pixels: int = MAX_PIXELS,
                      resize: int | None = None, crop: int | None = None, name: str | None = None) -> ImageFolder:
    """Read and check a zip of class folders; every refusal is a RobauditError of one line naming the member."""
    path = Path(path)
    name = name or path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise RobauditError(f"{name}: not a readable zip ({str(exc)[:100]})") from None
    with zf:
        files = []
        for info in zf.infolist():
            member = _member_path(info, name)    # every member, litter too: a hostile name is refused anyway
            if info.is_dir() or _is_litter(member):
                continue
            files.append((info, member))
        images, classes_file = _layout(files, name)
        if not images:
            raise RobauditError(f"{name}: holds no images (expected class folders of PNG or JPEG files)")
        if len(images) > max_images:
            raise RobauditError(f"{name}: {len(images)} images, over the cap of {max_images}")
        declared = sum(info.file_size for info, _ in files)
        if declared > max_bytes:
            raise RobauditError(f"{name}: decompresses to {declared} bytes, over the cap of {max_bytes} "
                                "(a zip bomb, or a test set too large for one upload)")
        budget = [max_bytes]
        order = _class_order(zf, classes_file, {cls for _, cls, _ in images}, name, budget)
        label = {cls: i for i, cls in enumerate(order)}
        images.sort(key=lambda item: (label[item[1]], item[2]))
        # Decoded straight into one (n, 3, H, W) array, greyscale repeated over the channels: one copy of
        # the images in memory (plus a third of one when every image turns out greyscale).
        x: np.ndarray | None = None
        first = ("", (0, 0))
        colour = False
        for i, (info, _, _) in enumerate(images):
            array = _decode(_read(zf, info, name, budget), info.filename, name, max_pixels, resize, crop)
            size = array.shape[:2]
            if x is None:
                first = (info.filename, size)
                if len(images) * 3 * size[0] * size[1] > max_bytes:
                    raise RobauditError(f"{name}: {len(images)} images of {size[1]}x{size[0]} take more than the cap "
                                        f"of {max_bytes} bytes decoded")
                x = np.empty((len(images), 3, *size), np.uint8)
            elif size != first[1]:
                hint = ("; declare a resize and centre crop" if resize is None and crop is None
                        else "; give a crop too, so every image ends up the same size")
                raise RobauditError(f"{name}: mixed image sizes: {first[0]!r} is {first[1][1]}x{first[1][0]}, "
                                    f"{info.filename!r} is {size[1]}x{size[0]}{hint}")
            if array.ndim == 2:
                x[i] = array
            else:
                x[i] = array.transpose(2, 0, 1)
                colour = True
    assert x is not None
    if not colour:
        x = x[:, :1]
    y = np.array([label[cls] for _, cls, _ in images], dtype=np.int64)
    return ImageFolder(np.ascontiguousarray(x), y, order)
