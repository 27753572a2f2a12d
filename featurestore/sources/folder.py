"""The image files under a directory, labelled and split by their folders."""

from __future__ import annotations

import os
from pathlib import Path

from .._folder import IMAGE_EXTENSIONS, folder_tags, scan_images
from ..errors import SourceError
from .item import ItemListSource, SourceItem

__all__ = ["FolderSource"]


class FolderSource(ItemListSource):
    """The image files under a directory, labelled and split by their folders.

    Files are found recursively; only the extensions in :data:`IMAGE_EXTENSIONS` count
    (any case), hidden files and folders (name starting with ``.``) are skipped, symbolic
    links are followed (each real directory is scanned once, so link cycles end). Broken
    links and unreadable files are listed like any other file: reading them fails, and
    ``extract`` records the failure. Items come sorted by their path below ``root``.

    The layout is decided from where the images lie:

    - all images directly in ``root`` -> unlabelled, no split;
    - no image directly in ``root`` and the top-level folders that hold images are all
      split names (:data:`SPLIT_NAMES`, any case) -> ``split`` is that folder's name as
      written; inside each split folder, images lying directly in it are unlabelled and
      images in subfolders take the subfolder's name as label (a split may be unlabelled
      while another is labelled, e.g. an unlabelled ``test``);
    - otherwise -> ``label`` is the name of the top-level folder, no split.

    Images deeper down keep the label of their class folder. Images both directly in a
    folder and in its subfolders, or split folders next to other folders, raise
    :class:`SourceError`.

    Parameters
    ----------
    root : str or os.PathLike
        The directory; made absolute (symbolic links in it are kept).

    Raises
    ------
    SourceError
        ``root`` is not a directory, holds no images, or mixes layouts.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.name = f"folder:{self.root}"
        if not self.root.is_dir():
            raise SourceError(f"image folder {str(self.root)!r} is not a directory")
        found = scan_images(self.root)
        if not found:
            raise SourceError(
                f"no images in {str(self.root)!r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}, "
                "skipping hidden files and folders)"
            )
        tags = folder_tags(found, str(self.root))
        base = str(self.root)
        self._set_items(
            [SourceItem(os.path.join(base, *parts), label, split) for parts, (label, split) in zip(found, tags)]
        )
