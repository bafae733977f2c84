# Listed first by each base that names `mmseg::`, so that the scope resolves
# on every stack. mmengine finds a scope's package by its distribution name
# ('mmseg' -> 'mmsegmentation'); the onedl-* stack installs mmseg as
# onedl-mmsegmentation. Reading this file imports fcvit_mm, which points the
# scope at the installed module (fcvit_mm.internals.register_config_scopes);
# mmengine reads a config's bases before its custom_imports, so this cannot
# wait for them. The import binds no config key (mmengine drops modules).
_base_ = []  # first: mmengine reads this file as a plain (not lazy) config
import fcvit_mm  # noqa: E402,F401
