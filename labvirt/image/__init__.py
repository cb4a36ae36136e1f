"""Guest images labvirt builds itself (the tiny rehearsal image)."""

from labvirt.image.tiny import (
    CMDLINE,
    TinyImage,
    TinyImageError,
    build_tiny_image,
    default_cache_dir,
)

__all__ = ["CMDLINE", "TinyImage", "TinyImageError", "build_tiny_image", "default_cache_dir"]
