"""What the operator's flags say the domain flows may do (built by server.config)."""

from __future__ import annotations

from dataclasses import dataclass

from server.rules import (
    DEFAULT_EXTERNAL_NAMES,
    DEFAULT_NODE_PORTS,
    ExternalNamePolicy,
    NodePortRange,
)


@dataclass(frozen=True, slots=True)
class Settings:
    # Rules of one request (and names of one DeleteServices request).
    max_rules: int = 256
    node_ports: NodePortRange = DEFAULT_NODE_PORTS
    # Where ExternalName Services may point (--cluster-domain, --allow-external-name).
    external_names: ExternalNamePolicy = DEFAULT_EXTERNAL_NAMES
