"""DICOM node: receive CT studies, decide when they are complete, select series, triage them and
send the results back as DICOM (Comprehensive 3D SR + Secondary Capture key images).

Modules, one job each: ``peers`` (AE addresses), ``state`` (SQLite tables of the node),
``scp`` (Storage SCP), ``selection`` (series rules), ``codes`` (pinned code table), ``sr`` and
``sc`` (result objects), ``triage`` (one study end to end), ``outbox`` (persistent sending),
``scu`` (C-STORE / STOW-RS), ``pull`` (C-GET from a PACS), ``node`` (the running service).
Research use only — not for diagnosis.
"""
