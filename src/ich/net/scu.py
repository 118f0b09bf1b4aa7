"""Sending result objects: C-STORE (DIMSE SCU) and DICOMweb STOW-RS.

Both return, per file, None when the peer accepted it or the reason it did not, so the outbox
can record every send and retry only what failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ich.net.peers import Peer

log = logging.getLogger("ich.net")


def cstore(peer: Peer, own_aet: str, paths: Sequence[str], timeout: float = 30.0
           ) -> dict[str, str | None]:
    """Send files to ``peer`` in one association; per path None (accepted) or a reason."""
    from pynetdicom import AE

    datasets = {p: pydicom.dcmread(p) for p in paths}
    ae = AE(ae_title=own_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets.values()}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "peer unreachable or aborted"
        return dict.fromkeys(paths, f"{peer}: {why}")
    out: dict[str, str | None] = {}
    try:
        for path, ds in datasets.items():
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                out[path] = f"{peer}: no response (connection lost or timed out)"
            elif code in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning: stored
                out[path] = None
            else:
                out[path] = f"{peer}: C-STORE status 0x{code:04X}"
    finally:
        assoc.release()
    return out


def stow(url: str, paths: Sequence[str], timeout: float = 30.0) -> dict[str, str | None]:
    """POST files to a STOW-RS endpoint (``.../dicom-web``) in one request."""
    from dicomweb_client.api import DICOMwebClient
    from requests import RequestException

    client = DICOMwebClient(url=url)
    datasets = [pydicom.dcmread(p) for p in paths]
    try:
        response = client.store_instances(datasets=datasets)
    except RequestException as exc:
        return dict.fromkeys(paths, f"{url}: {type(exc).__name__}: {str(exc)[:200]}")
    failed = {str(item.ReferencedSOPInstanceUID): int(getattr(item, "FailureReason", 0))
              for item in response.get("FailedSOPSequence", [])}
    return {p: (f"{url}: failure reason 0x{failed[str(ds.SOPInstanceUID)]:04X}"
                if str(ds.SOPInstanceUID) in failed else None)
            for p, ds in zip(paths, datasets, strict=True)}
