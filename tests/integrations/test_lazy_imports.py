"""The adapters' frameworks load only when an adapter is used: ``import medagentgym``, the
sandbox registry (with the docker/podman providers) and the server (with its OpenEnv routes)
import none of them."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = {"inspect_ai", "verifiers", "openenv", "trl", "transformers", "torch",
              "datasets", "docker", "websockets"}


def test_frameworks_are_not_imported_eagerly():
    code = ("import sys, json, medagentgym, medagentgym.sandbox, medagentgym.integrations, "
            "medagentgym.integrations.tools\n"
            "medagentgym.sandbox.available_providers()\n"
            "try:\n    import medagentgym.server.app\nexcept ImportError:\n    pass\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & FRAMEWORKS, sorted(loaded & FRAMEWORKS)
