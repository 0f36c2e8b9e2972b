"""What every benchmark path creates, and where things are: shared by bench/'s modules."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

RAW = "raw"
ONE = "k8sailor_1req"
SPREAD = "k8sailor_creq"
KUBECTL = "kubectl"
LABELS = {
    RAW: "raw kubernetes_asyncio",
    ONE: "k8sailor, 1 request",
    SPREAD: "k8sailor, c requests",
    KUBECTL: "kubectl, 1 process per Service",
}

DEPLOYMENT = "web"
SELECTOR = {"app": "web"}
PORT, TARGET = 80, 8080

# Deleting between rounds, with its own ApiClient so that it warms no connection of a path.
CLEANUP_CONCURRENCY = 32
# Warm-up and memory requests use the server's largest request.
MAX_RULES = 1000
MEMORY_REQUEST = 1000
RUN_TIMEOUT_S = 600.0
