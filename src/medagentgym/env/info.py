"""Moved: the request_info index lives in the data layer, :mod:`medagentgym.data.info`.

This name stays an alias of that module (the same module object, so attributes and
monkeypatches are shared) for code that imports it from here.
"""

import sys

from medagentgym.data import info as _info

sys.modules[__name__] = _info
