"""Fetch a study from a PACS with C-GET (or have it moved to this node with C-MOVE).

C-GET needs nothing configured at the PACS: the instances come back on the same association,
so they are stored by the node's own C-STORE handler, exactly as if the PACS had pushed them.
C-MOVE asks the PACS to push the study to ``move_destination`` (this node's AE title, which the
PACS must know); a running ``ich node`` then receives it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ich.errors import IchError
from ich.net.peers import Peer, hash_id
from ich.net.scp import CT_SOP_CLASSES, TRANSFER_SYNTAXES, StoreHandlers
from ich.net.state import NodeState

log = logging.getLogger("ich.net")

GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE


class PullError(IchError):
    """The PACS refused or failed the retrieve (the message says which and why)."""


def _identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def c_get(state: NodeState, peer: Peer, own_aet: str, study_uid: str) -> int:
    """Retrieve every CT instance of a study into the node's store; return how many arrived.

    Raises:
        PullError: no association, or a final status other than success/warning.
    """
    from pynetdicom import AE, build_role

    ae = AE(ae_title=own_aet)
    ae.add_requested_context(GET_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    for sop_class in CT_SOP_CLASSES:  # room for 128 contexts: CT with each syntax, one each
        for ts in TRANSFER_SYNTAXES[:6]:
            ae.add_requested_context(sop_class, [ts])
    roles: list[Any] = [build_role(c, scp_role=True) for c in CT_SOP_CLASSES]
    handlers = StoreHandlers(state)
    count = [0]

    def on_store(event: object) -> int:
        status = handlers.on_store(event)
        count[0] += status == 0
        return status

    from pynetdicom import evt

    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        raise PullError(f"{peer}: association refused or peer unreachable")
    final = None
    try:
        for status, _ in assoc.send_c_get(_identifier(study_uid), GET_MODEL):
            if status is not None and "Status" in status:
                final = int(status.Status)
    finally:
        aid = getattr(assoc, "ich_id", None)
        assoc.release()
        if aid:
            state.end_association(aid, "released")
    if final not in (0x0000, 0xB000):
        raise PullError(f"{peer}: C-GET of study {hash_id(study_uid)} ended with status "
                        f"0x{(final or 0):04X}")
    log.info("pulled %d instance(s) of study %s from %s", count[0], hash_id(study_uid), peer.aet)
    return count[0]


def c_move(peer: Peer, own_aet: str, study_uid: str, move_destination: str) -> None:
    """Ask ``peer`` to send a study to ``move_destination`` (C-MOVE).

    Raises:
        PullError: no association, or a final status other than success/warning.
    """
    from pynetdicom import AE

    ae = AE(ae_title=own_aet)
    ae.add_requested_context(MOVE_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
    if not assoc.is_established:
        raise PullError(f"{peer}: association refused or peer unreachable")
    final = None
    try:
        for status, _ in assoc.send_c_move(_identifier(study_uid), move_destination, MOVE_MODEL):
            if status is not None and "Status" in status:
                final = int(status.Status)
    finally:
        assoc.release()
    if final not in (0x0000, 0xB000):
        raise PullError(f"{peer}: C-MOVE to {move_destination} ended with status "
                        f"0x{(final or 0):04X}")
