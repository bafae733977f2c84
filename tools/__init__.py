# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The command-line tools. A package only so that the tools and the tests
import the analysis tools' shared code (:mod:`tools.analysis.lib`) from a
clone; ``fcvit_mm`` never imports it."""
