"""Names the lifecycle modules still import from here, until they import the modules the names
moved to (helper dlife): then this module goes. The create flow is server.domain.create."""

from server.domain.create import Exposer, ExposeRequest
from server.domain.errors import BadRequest, DeploymentNotFound, DeploymentUnusable, RequestError
from server.domain.outcomes import Outcome, RuleResult
from server.domain.requests import check_target
from server.domain.settings import Settings
from server.domain.spans import describe_rule_span

__all__ = [
    "BadRequest",
    "DeploymentNotFound",
    "DeploymentUnusable",
    "ExposeRequest",
    "Exposer",
    "Outcome",
    "RequestError",
    "RuleResult",
    "Settings",
    "check_target",
    "describe_rule_span",
]
