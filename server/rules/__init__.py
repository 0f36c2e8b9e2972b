"""Service rules: compact text and structured specs become one validated model.

This package is pure: no I/O, no grpc, no kubernetes imports. It turns what a caller wrote
(``"80:8088"``, ``"admin=!31234:80:8088"``, ``"@db.example.com"``, or the same thing as a
structured spec) into a :class:`ServiceRule`, or refuses it with a :class:`RuleError` that names
the rule, the column (or field) and the problem in a sentence.

Validation mirrors the kube-apiserver's own checks for the fields a rule controls (regexes and
limits as in ``k8s.io/apimachinery/pkg/util/validation`` and ``ValidateService``), so that a rule
accepted here is not refused later by the apiserver, except for what only the cluster knows (a
node port already taken, a custom node port range we were not told about).

The grammar, the error list and the differences from ``kubectl create service`` and from the
earlier Go tool are documented in ``docs/rules.md``.

Hostile input is cheap to refuse: every step is linear in the length of the rule, and a rule
longer than :data:`MAX_RULE_LENGTH` characters or with more than :data:`MAX_PORTS` ports is
refused before it is parsed.

Speed matters, within reason: parse + build should reach 50k rules/s on one core
(``bench/bench_rules.py``), far above what the API server can take (a few hundred creates/s).
One parser reads every spelling, with possessive regexes that never backtrack; the rules
themselves are plain frozen dataclasses.

The modules, each importing only those above it:

- :mod:`.model`: the Service types and protocols, the dataclasses and their canonical text,
  the node port range, :class:`RuleError`.
- :mod:`.names`: name checks as the apiserver does them (DNS labels and subdomains, IANA service
  names, app protocols).
- :mod:`.ports`: checks of one port and of the ports of one rule together; Service port names.
- :mod:`.targets`: where an ExternalName may point: no IP address, nothing of the node or its
  link, nothing inside the cluster, unless the operator allows a suffix
  (:class:`ExternalNamePolicy`).
- :mod:`.syntax`: the tokens of text rules, their columns (:func:`locate`), syntax errors.
- :mod:`.grammar`: :func:`parse_rule`, the text parser.
- :mod:`.specs`: :func:`check_rule`, the same checks for rules built from structured specs;
  :func:`parse_any`, either one for a rule however it arrived.
- :mod:`.brief`: long text shown in brief (its start and its length), for error sentences and
  log lines alike; imported from the module itself, as it is not about rules.

Other code imports the names in ``__all__`` from this package. The modules share what they
need of each other under public names (:func:`.model.quoted`, :func:`.ports.port_problem`,
:data:`.syntax.PORT_RE`, ...) that stay out of ``__all__``: they are the package's own
building blocks, not its interface. Only tests reach into a module for an underscored helper.
"""

from server.rules.grammar import parse_rule
from server.rules.model import (
    DEFAULT_NODE_PORTS,
    KUBE_SERVICE_TYPE,
    MAX_PORTS,
    MAX_RULE_LENGTH,
    NAME_SUFFIX,
    TYPE_PREFIX,
    NodePortRange,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
)
from server.rules.names import (
    dns1035_label_problem,
    dns1123_label_problem,
    dns1123_subdomain_problem,
)
from server.rules.ports import port_names
from server.rules.specs import check_rule, parse_any
from server.rules.syntax import locate
from server.rules.targets import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_EXTERNAL_NAMES,
    ExternalNamePolicy,
    domain_problem,
    external_target_problem,
    normalized_domain,
)

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_EXTERNAL_NAMES",
    "DEFAULT_NODE_PORTS",
    "KUBE_SERVICE_TYPE",
    "MAX_PORTS",
    "MAX_RULE_LENGTH",
    "NAME_SUFFIX",
    "TYPE_PREFIX",
    "ExternalNamePolicy",
    "NodePortRange",
    "PortRule",
    "Protocol",
    "RuleError",
    "ServiceRule",
    "ServiceType",
    "check_rule",
    "dns1035_label_problem",
    "dns1123_label_problem",
    "dns1123_subdomain_problem",
    "domain_problem",
    "external_target_problem",
    "locate",
    "normalized_domain",
    "parse_any",
    "parse_rule",
    "port_names",
]
