# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Third-party deprecation notices that a run of our tools does not show:
the libraries' business, not the user's.

* :func:`quiet_third_party_warnings`: the warnings of
  :data:`THIRD_PARTY_WARNINGS` (:func:`fcvit_mm.engine.run_tool` sets it
  before a tool's ``main`` runs);
* :func:`quiet_logged_deprecations`: the lines of
  :data:`LOGGED_DEPRECATIONS` that mmengine logs on itself (the tools add
  it to the runner's logger).
"""
import logging
import re
import warnings

#: third-party deprecation notices a run of our tools does not show
#: (pytest.ini lists the same)
THIRD_PARTY_WARNINGS = (
    'pkg_resources is deprecated',  # setuptools >= 80, on mmengine, mmcv
    '`reduce_zero_label` will be deprecated',  # mmseg, on its own pipeline
    '``build_loss`` would be deprecated',  # mmseg, on its own heads
    'Default ``avg_non_ignore`` is False',  # mmseg's CrossEntropyLoss
    # torch >= 2.12 on DDP's argument, which mmengine's wrapper passes
    '`broadcast_buffers` is deprecated',
)
#: deprecation notices that mmengine logs (not warns) in every training run
#: of its own, through its CheckpointHook
LOGGED_DEPRECATIONS = (
    '"FileClient" will be deprecated in future',
    '"HardDiskBackend" is the alias of "LocalBackend"',
)

__all__ = ['LOGGED_DEPRECATIONS', 'THIRD_PARTY_WARNINGS',
           'quiet_logged_deprecations', 'quiet_third_party_warnings']


def quiet_third_party_warnings() -> None:
    """Hide :data:`THIRD_PARTY_WARNINGS` in this process (the tools' entry
    points; the first is hidden before anything imports mmengine)."""
    for message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings('ignore', re.escape(message))


class _DropDeprecations(logging.Filter):

    def filter(self, record):
        text = record.getMessage()
        return not any(m in text for m in LOGGED_DEPRECATIONS)


def quiet_logged_deprecations(logger: logging.Logger) -> None:
    """Drop :data:`LOGGED_DEPRECATIONS` from a run's logger (the tools do,
    once they have built the runner)."""
    if not any(isinstance(f, _DropDeprecations) for f in logger.filters):
        logger.addFilter(_DropDeprecations())
