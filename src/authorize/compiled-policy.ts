// One Authorization compiled into flat, prebuilt data (CIDRs parsed, vacuous parts folded
// away) and the matcher that walks it. See ztunnel-behaviour.md §6 for the semantics.
// Must never allocate while matching: matching runs for every policy on every inbound
// connection, and most policies do not match.
// Invariants: every CompiledMatch has at least one non-empty group; every compiled clause
// has at least one CompiledMatch; a policy with `matchesAll` has no rules to look at.

import type { Authorization, Match, ServiceAccountMatch, StringMatch } from '../config/types.js';
import { cidrContains, parseCidr, type Cidr, type ParsedIp } from '../util/ip.js';
import type { AuthzConnection } from './authz-connection.js';

const EXACT = 0;
const PREFIX = 1;
const SUFFIX = 2;
const PRESENCE = 3;

class CompiledStringMatch {
  readonly kind: number;
  readonly value: string;
  constructor(m: StringMatch) {
    switch (m.kind) {
      case 'Exact':
        this.kind = EXACT;
        this.value = m.value;
        break;
      case 'Prefix':
        this.kind = PREFIX;
        this.value = m.value;
        break;
      case 'Suffix':
        this.kind = SUFFIX;
        this.value = m.value;
        break;
      case 'Presence':
        this.kind = PRESENCE;
        this.value = '';
        break;
    }
  }
}

function stringMatches(m: CompiledStringMatch, s: string): boolean {
  switch (m.kind) {
    case EXACT:
      return s === m.value;
    case PREFIX:
      return s.startsWith(m.value);
    case SUFFIX:
      return s.endsWith(m.value);
    default:
      return s.length !== 0;
  }
}

function anyString(ms: readonly CompiledStringMatch[], s: string): boolean {
  for (let i = 0; i < ms.length; i++) if (stringMatches(ms[i]!, s)) return true;
  return false;
}

function anyCidr(cs: readonly Cidr[], ip: ParsedIp): boolean {
  for (let i = 0; i < cs.length; i++) if (cidrContains(cs[i]!, ip)) return true;
  return false;
}

function anyServiceAccount(sas: readonly ServiceAccountMatch[], namespace: string, serviceAccount: string): boolean {
  for (let i = 0; i < sas.length; i++) {
    const sa = sas[i]!;
    if (sa.namespace === namespace && sa.serviceAccount === serviceAccount) return true;
  }
  return false;
}

/** One Match with every group prebuilt; an empty array means "group not set". */
export class CompiledMatch {
  readonly destinationPorts: readonly number[];
  readonly notDestinationPorts: readonly number[];
  readonly sourceIps: readonly Cidr[];
  readonly notSourceIps: readonly Cidr[];
  readonly destinationIps: readonly Cidr[];
  readonly notDestinationIps: readonly Cidr[];
  readonly serviceAccounts: readonly ServiceAccountMatch[];
  readonly notServiceAccounts: readonly ServiceAccountMatch[];
  readonly namespaces: readonly CompiledStringMatch[];
  readonly notNamespaces: readonly CompiledStringMatch[];
  readonly principals: readonly CompiledStringMatch[];
  readonly notPrincipals: readonly CompiledStringMatch[];

  constructor(m: Match, onBadCidr: (cidr: string) => void) {
    const cidrs = (list: readonly string[]): Cidr[] => {
      const out: Cidr[] = [];
      for (const text of list) {
        const c = parseCidr(text);
        // Upstream drops invalid CIDRs when converting policies; do the same, loudly.
        if (c === undefined) onBadCidr(text);
        else out.push(c);
      }
      return out;
    };
    const strings = (list: readonly StringMatch[]): CompiledStringMatch[] => list.map((s) => new CompiledStringMatch(s));
    const sas = (list: readonly ServiceAccountMatch[]): ServiceAccountMatch[] =>
      list.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount }));
    this.destinationPorts = [...m.destinationPorts];
    this.notDestinationPorts = [...m.notDestinationPorts];
    this.sourceIps = cidrs(m.sourceIps);
    this.notSourceIps = cidrs(m.notSourceIps);
    this.destinationIps = cidrs(m.destinationIps);
    this.notDestinationIps = cidrs(m.notDestinationIps);
    this.serviceAccounts = sas(m.serviceAccounts);
    this.notServiceAccounts = sas(m.notServiceAccounts);
    this.namespaces = strings(m.namespaces);
    this.notNamespaces = strings(m.notNamespaces);
    this.principals = strings(m.principals);
    this.notPrincipals = strings(m.notPrincipals);
  }

  get isEmpty(): boolean {
    return (
      this.destinationPorts.length === 0 &&
      this.notDestinationPorts.length === 0 &&
      this.sourceIps.length === 0 &&
      this.notSourceIps.length === 0 &&
      this.destinationIps.length === 0 &&
      this.notDestinationIps.length === 0 &&
      this.serviceAccounts.length === 0 &&
      this.notServiceAccounts.length === 0 &&
      this.namespaces.length === 0 &&
      this.notNamespaces.length === 0 &&
      this.principals.length === 0 &&
      this.notPrincipals.length === 0
    );
  }
}

/** Every non-empty group must hold; cheap numeric groups are checked before string groups. */
export function matchHolds(m: CompiledMatch, conn: AuthzConnection): boolean {
  const port = conn.dstPort;
  if (m.destinationPorts.length !== 0 && !m.destinationPorts.includes(port)) return false;
  if (m.notDestinationPorts.length !== 0 && m.notDestinationPorts.includes(port)) return false;
  if (m.sourceIps.length !== 0 && !anyCidr(m.sourceIps, conn.srcIp)) return false;
  if (m.notSourceIps.length !== 0 && anyCidr(m.notSourceIps, conn.srcIp)) return false;
  if (m.destinationIps.length !== 0 && !anyCidr(m.destinationIps, conn.dstIp)) return false;
  if (m.notDestinationIps.length !== 0 && anyCidr(m.notDestinationIps, conn.dstIp)) return false;
  const id = conn.srcIdentity;
  // Without an identity no service account and no principal matches, so the positive
  // groups fail and the negative groups hold (none of their values matched).
  if (m.serviceAccounts.length !== 0) {
    if (id === undefined || !anyServiceAccount(m.serviceAccounts, id.namespace, id.serviceAccount)) return false;
  }
  if (m.notServiceAccounts.length !== 0 && id !== undefined) {
    if (anyServiceAccount(m.notServiceAccounts, id.namespace, id.serviceAccount)) return false;
  }
  // The namespace of a plaintext peer is '' (so e.g. Prefix '' still matches it).
  const namespace = id === undefined ? '' : id.namespace;
  if (m.namespaces.length !== 0 && !anyString(m.namespaces, namespace)) return false;
  if (m.notNamespaces.length !== 0 && anyString(m.notNamespaces, namespace)) return false;
  if (m.principals.length !== 0) {
    if (id === undefined || !anyString(m.principals, id.principal)) return false;
  }
  if (m.notPrincipals.length !== 0 && id !== undefined) {
    if (anyString(m.notPrincipals, id.principal)) return false;
  }
  return true;
}

/** rules (OR) of clauses (AND) of matches (OR), with vacuous parts removed. */
export type CompiledRules = readonly (readonly (readonly CompiledMatch[])[])[];

export type AuthzDecision =
  | { readonly kind: 'allow'; readonly dryRunNotes?: readonly string[] }
  | {
      readonly kind: 'deny';
      /** `namespace/name` of the denying policy, or '' when no allow policy matched. */
      readonly policy: string;
      readonly reason: string;
      readonly dryRunNotes?: readonly string[];
    };

export class CompiledPolicy {
  readonly key: string;
  readonly name: string;
  readonly namespace: string;
  readonly scope: Authorization['scope'];
  readonly action: Authorization['action'];
  readonly dryRun: boolean;
  /** Position in the store: lower wins when several deny policies match. */
  readonly order: number;
  /** A rule with no (non-vacuous) clauses exists: the policy matches every connection. */
  readonly matchesAll: boolean;
  readonly rules: CompiledRules;
  /**
   * A necessary condition used to index the policy: when set, the policy can only match a
   * connection whose principal (resp. destination port) is in the list.
   */
  readonly guardPrincipals: readonly string[] | undefined;
  readonly guardPorts: readonly number[] | undefined;
  /** Prebuilt so that denying allocates nothing. */
  readonly denyDecision: AuthzDecision;

  constructor(p: Authorization, order: number, onBadCidr: (cidr: string) => void) {
    this.key = `${p.namespace}/${p.name}`;
    this.name = p.name;
    this.namespace = p.namespace;
    this.scope = p.scope;
    this.action = p.action;
    this.dryRun = p.dryRun;
    this.order = order;
    let matchesAll = false;
    const rules: CompiledMatch[][][] = [];
    for (const rule of p.rules) {
      const clauses: CompiledMatch[][] = [];
      let ruleCanMatch = true;
      for (const clause of rule) {
        // A clause with zero matches always holds: it adds nothing to the AND.
        if (clause.length === 0) continue;
        const matches = clause.map((m) => new CompiledMatch(m, onBadCidr)).filter((m) => !m.isEmpty);
        // Only empty Matches: they are skipped, so nothing can make this clause hold.
        if (matches.length === 0) {
          ruleCanMatch = false;
          break;
        }
        clauses.push(matches);
      }
      if (!ruleCanMatch) continue;
      if (clauses.length === 0) matchesAll = true;
      rules.push(clauses);
    }
    this.matchesAll = matchesAll;
    this.rules = matchesAll ? [] : rules;
    this.guardPrincipals = matchesAll ? undefined : buildGuard(this.rules, principalGuardOfClause);
    this.guardPorts = matchesAll || this.guardPrincipals !== undefined ? undefined : buildGuard(this.rules, portGuardOfClause);
    this.denyDecision = Object.freeze({
      kind: 'deny',
      policy: this.key,
      reason: `explicitly denied by: ${this.key}`,
    } as const);
  }
}

export function policyMatches(p: CompiledPolicy, conn: AuthzConnection): boolean {
  if (p.matchesAll) return true;
  const rules = p.rules;
  for (let r = 0; r < rules.length; r++) {
    const clauses = rules[r]!;
    let all = true;
    for (let c = 0; c < clauses.length && all; c++) {
      const matches = clauses[c]!;
      let any = false;
      for (let m = 0; m < matches.length; m++) {
        if (matchHolds(matches[m]!, conn)) {
          any = true;
          break;
        }
      }
      all = any;
    }
    if (all) return true;
  }
  return false;
}

/**
 * The union over rules of one clause's necessary values, or undefined when some rule has no
 * clause that constrains the attribute (then the policy cannot be indexed by it).
 */
function buildGuard<T>(rules: CompiledRules, ofClause: (clause: readonly CompiledMatch[]) => T[] | undefined): T[] | undefined {
  if (rules.length === 0) return undefined;
  const union = new Set<T>();
  for (const rule of rules) {
    let found: T[] | undefined;
    for (const clause of rule) {
      found = ofClause(clause);
      if (found !== undefined) break;
    }
    if (found === undefined) return undefined;
    for (const v of found) union.add(v);
  }
  return [...union];
}

/** A clause needs one of these principals when every match has only Exact principals. */
function principalGuardOfClause(clause: readonly CompiledMatch[]): string[] | undefined {
  const out: string[] = [];
  for (const m of clause) {
    if (m.principals.length === 0) return undefined;
    for (const s of m.principals) {
      if (s.kind !== EXACT) return undefined;
      out.push(s.value);
    }
  }
  return out;
}

function portGuardOfClause(clause: readonly CompiledMatch[]): number[] | undefined {
  const out: number[] = [];
  for (const m of clause) {
    if (m.destinationPorts.length === 0) return undefined;
    out.push(...m.destinationPorts);
  }
  return out;
}
