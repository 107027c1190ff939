"""An embedded FHIR R4 server (read-only seed + per-episode overlay and write log), the
MedAgentBench seeds and graders. See ``docs/datasets.md`` (MedAgentBench)."""
