"""Run a node with the test stand-in predictor as its own process (for kill -9 tests).

Usage: python node_process.py DATA PORT STABLE_SECONDS DELAY [DESTINATION ...]
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))

from web_helpers import FakePredictor

from ich.net.node import Node, NodeSettings
from ich.net.peers import parse_peer

if __name__ == "__main__":
    data, port, stable, delay, *dests = sys.argv[1:]
    node = Node(NodeSettings(data_dir=Path(data), port=int(port), stable_seconds=float(stable),
                             destinations=[parse_peer(d) for d in dests]),
                predictor=FakePredictor(delay=float(delay)))
    node.start()
    threading.Event().wait()
