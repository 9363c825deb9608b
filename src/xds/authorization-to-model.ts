// istio.security.Authorization (as istiod pushes it over delta xDS) → the Authorization record
// of src/config/types.ts, in exactly the shape the local YAML loader produces: rules (OR) of
// clauses (AND) of matches (OR), CIDR text for IP ranges, Exact/Prefix/Suffix/Presence.
// Pure: decoded message in, frozen record or a ResourceError value out.
// Must never: throw for bad input, or drop a condition it does not understand. A policy
// carrying `extensions` is refused (NACKed) rather than enforced without them: ignoring a
// condition of an ALLOW policy would allow more than the policy says.

import { deepFreeze } from '../config/freeze.js';
import type { Authorization, Match, StringMatch } from '../config/types.js';
import { AuthorizationCodec } from './protos.js';
import { cidrFromBytes, enumValue, MappingFailure, portValue, required, runMapping, type Mapped } from './resource-error.js';
import type { WireAuthorization, WireIpRange, WireMatch, WireStringMatch } from './wire-types.js';

const SCOPE = { GLOBAL: 'Global', NAMESPACE: 'Namespace', WORKLOAD_SELECTOR: 'WorkloadSelector' } as const;
const ACTION = { ALLOW: 'Allow', DENY: 'Deny' } as const;

/** Maps one decoded Authorization resource named `resource` (`namespace/name`). */
export function authorizationToModel(resource: string, a: WireAuthorization): Mapped<Authorization> {
  return runMapping(resource, () => {
    if (a.extensions.length > 0) throw new MappingFailure('extensions', 'policy extensions are not supported by ztunnel-ts');
    const policy: Authorization = {
      name: required(a.name, 'name'),
      namespace: required(a.namespace, 'namespace'),
      scope: enumValue(a.scope, SCOPE, 'scope'),
      action: enumValue(a.action, ACTION, 'action'),
      dryRun: a.dry_run,
      rules: a.rules.map((rule, r) =>
        rule.clauses.map((clause, c) => clause.matches.map((m, i) => match(m, `rules[${r}].clauses[${c}].matches[${i}]`))),
      ),
    };
    return deepFreeze(policy);
  });
}

/** Decodes the Any payload bytes of an Authorization resource and maps it; bad bytes are an error value too. */
export function authorizationBytesToModel(resource: string, bytes: Uint8Array): Mapped<Authorization> {
  let decoded: WireAuthorization;
  try {
    decoded = AuthorizationCodec.decode(bytes);
  } catch (err) {
    return { ok: false, error: { resource, field: '(message)', reason: (err as Error).message } };
  }
  return authorizationToModel(resource, decoded);
}

function match(m: WireMatch, field: string): Match {
  if (m.extensions.length > 0) throw new MappingFailure(`${field}.extensions`, 'match extensions are not supported by ztunnel-ts');
  const strings = (list: WireStringMatch[], name: string): StringMatch[] => list.map((s, i) => stringMatch(s, `${field}.${name}[${i}]`));
  const cidrs = (list: WireIpRange[], name: string): string[] => list.map((r, i) => cidr(r, `${field}.${name}[${i}]`));
  const ports = (list: number[], name: string): number[] => list.map((p, i) => portValue(p, `${field}.${name}[${i}]`));
  return {
    namespaces: strings(m.namespaces, 'namespaces'),
    notNamespaces: strings(m.not_namespaces, 'not_namespaces'),
    principals: strings(m.principals, 'principals'),
    notPrincipals: strings(m.not_principals, 'not_principals'),
    serviceAccounts: m.service_accounts.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount })),
    notServiceAccounts: m.not_service_accounts.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount })),
    sourceIps: cidrs(m.source_ips, 'source_ips'),
    notSourceIps: cidrs(m.not_source_ips, 'not_source_ips'),
    destinationIps: cidrs(m.destination_ips, 'destination_ips'),
    notDestinationIps: cidrs(m.not_destination_ips, 'not_destination_ips'),
    destinationPorts: ports(m.destination_ports, 'destination_ports'),
    notDestinationPorts: ports(m.not_destination_ports, 'not_destination_ports'),
  };
}

function stringMatch(s: WireStringMatch, field: string): StringMatch {
  switch (s.match_type) {
    case 'exact':
      return { kind: 'Exact', value: s.exact ?? '' };
    case 'prefix':
      return { kind: 'Prefix', value: s.prefix ?? '' };
    case 'suffix':
      return { kind: 'Suffix', value: s.suffix ?? '' };
    case 'presence':
      return { kind: 'Presence' };
    default:
      throw new MappingFailure(field, 'no match type (exact, prefix, suffix or presence) is set');
  }
}

/** Address bytes + prefix length → CIDR text. `length` is a plain uint32: 0 means /0, as upstream. */
function cidr(r: WireIpRange, field: string): string {
  return cidrFromBytes(r.address, r.length, `${field}.address`, `${field}.length`);
}
