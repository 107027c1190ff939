"""The verifiers taskset plugin ``medagentgym-verifiers`` (``vf-eval medagentgym-verifiers``).

verifiers imports a taskset by a top-level module name; this one re-exports
:mod:`medagentgym.integrations.verifiers` (needs the ``verifiers`` extra).
"""

from medagentgym.integrations.verifiers import *  # noqa: F403
from medagentgym.integrations.verifiers import __all__  # noqa: F401
