# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The analysis tools; their shared code is :mod:`tools.analysis.lib`."""
