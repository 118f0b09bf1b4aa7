"""Storage SCP: C-ECHO and C-STORE of CT, every transfer syntax ich decodes, bytes kept as sent.

Why the handler is short: pynetdicom runs one thread per association and waits for the handler
before answering the sender. It only hashes the bytes ``event.encoded_dataset()`` gives (file
meta + data set exactly as received, no pixel decoding), writes them atomically under their
SHA-256, and records the instance in SQLite. Everything slow happens after the study is stable.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14

from ich.atomic import atomic_write_bytes
from ich.net.peers import hash_id
from ich.net.state import Instance, NodeState

log = logging.getLogger("ich.net")

#: What the node stores: CT slices (and Enhanced CT, stored and reported as not analysed).
CT_SOP_CLASSES: tuple[UID, ...] = (CTImageStorage, EnhancedCTImageStorage)

#: Transfer syntaxes ich decodes (pydicom + pylibjpeg / openjpeg / pyjpegls / gdcm plugins).
#: 12-bit JPEG Extended is left out: its decoder is GPL and not installed by ich.
TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, RLELossless, JPEGLosslessSV1, JPEGLosslessP14, JPEGLSLossless,
    JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, JPEGBaseline8Bit,
)

#: C-STORE status codes (PS3.4 Annex B.2.3).
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


def add_storage_contexts(ae: Any) -> None:
    """Add the CT storage contexts with every transfer syntax above (the defaults offer only
    uncompressed syntaxes, so a compressed series would be refused) plus Verification."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    for sop_class in CT_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(Verification)


class StoreHandlers:
    """The event handlers of the SCP, bound to one :class:`NodeState`.

    Args:
        state: Where instances and associations are recorded.
        on_instance: Called after each stored instance (the node wakes its scheduler).
    """

    def __init__(self, state: NodeState, on_instance: Callable[[], None] | None = None) -> None:
        self.state = state
        self.on_instance = on_instance or (lambda: None)

    def handlers(self) -> list[Any]:
        """``evt_handlers`` for ``AE.start_server`` (and for a C-GET association)."""
        from pynetdicom import evt

        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_closed),
        ]

    def _aid(self, assoc: Any) -> str:
        aid = getattr(assoc, "ich_id", None)
        if aid is None:  # a C-GET association we requested ourselves
            aid = self.state.open_association(_calling(assoc))
            assoc.ich_id = aid
        return str(aid)

    def on_echo(self, event: Any) -> int:
        return SUCCESS

    def on_accepted(self, event: Any) -> None:
        assoc = event.assoc
        assoc.ich_id = self.state.open_association(_calling(assoc))
        refused = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        if refused:  # senders such as storescu propose every storage class; only CT is kept
            log.debug("association %s from %s: %d SOP classes refused (not CT storage)",
                      assoc.ich_id[:8], _calling(assoc), len(refused))

    def on_released(self, event: Any) -> None:
        self.state.end_association(self._aid(event.assoc), "released")
        self.on_instance()

    def on_aborted(self, event: Any) -> None:
        self.state.end_association(self._aid(event.assoc), "aborted")
        log.info("association %s aborted: its instances wait for a retry",
                 self._aid(event.assoc)[:8])

    def on_closed(self, event: Any) -> None:
        # A connection that closes without release or abort (sender killed) counts as aborted;
        # "closed" lets a release reported late by the association thread still win.
        if getattr(event.assoc, "ich_id", None) is not None:
            self.state.end_association(event.assoc.ich_id, "closed")

    def on_store(self, event: Any) -> int:
        """Write the instance as received; answer a failure status (never raise) on error."""
        sop_class = str(event.request.AffectedSOPClassUID)
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        try:
            data = bytes(event.encoded_dataset())
            ds = event.dataset  # elements stay raw: only the UIDs below are parsed
            study_uid = str(ds.get("StudyInstanceUID", "") or "")
            series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        except Exception as exc:
            log.warning("instance %s refused: data set cannot be parsed (%s)", hash_id(sop_uid),
                        type(exc).__name__)
            return CANNOT_UNDERSTAND
        if not study_uid:
            log.warning("instance %s refused: no (0020,000D) Study Instance UID",
                        hash_id(sop_uid))
            return CANNOT_UNDERSTAND
        sha = hashlib.sha256(data).hexdigest()
        try:
            path = self.state.file_path(sha)
            if not os.path.exists(path):
                atomic_write_bytes(path, data)
            self.state.add_instance(Instance(sop_uid, study_uid, series_uid, sop_class, sha),
                                    self._aid(event.assoc), _calling(event.assoc))
        except OSError as exc:
            log.error("instance %s not stored: %s", hash_id(sop_uid), exc.strerror)
            return OUT_OF_RESOURCES
        self.on_instance()
        return SUCCESS


def _calling(assoc: Any) -> str:
    return str(assoc.requestor.ae_title).strip()
