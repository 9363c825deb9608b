// The node side of the ambient capture path (istio-cni's former node-level rules, as the
// Istio blog "Deep Dive into Ambient Mesh - Traffic Path" (2023) walks them), run in the node's netns: the ipset of captured pod IPs, our mangle/nat chains that mark
// packets, policy-routing rules 100–103 and tables 100/101/102, and the istioin/istioout
// tunnels to the ztunnel pod (GENEVE where the kernel has it, a veth pair otherwise).
// Must never: touch per-pod state (the node agent adds pods to the ipset and table 100),
// or remove anything it did not add (our chains, rules 100–103, tables 100–102, the ipset,
// the two tunnels).
// Mark flow: captured pod → 0x100 → table 101 → istioout → ztunnel:15001. Anything else
// (not 0x200) to a captured pod → table 100 → istioin → ztunnel:15006/15008. Packets
// ztunnel sends with a pod's source IP → 0x210 (connmark), bypass the tables; their replies
// → 0x040 → table 102 → back to ztunnel's eth0. Host / ztunnel-own traffic → 0x220, bypass.

import {
  GENEVE_UDP_PORT,
  MAIN_RULE_PREF,
  NODE_MARKS as M,
  NODE_RULE_PREFS,
  NODE_TABLES,
  PODS_IPSET,
  TUNNELS,
  formatMark,
} from './constants.js';
import { buildIptablesApplySteps, buildIptablesRemoveSteps, type ChainRules, type IptablesBackend } from './iptables.js';
import type { Step } from './plan.js';

export type NodeTunnelMode = { kind: 'geneve' } | { kind: 'veth'; ztunnelNetns: string };

export interface NodeRedirectOptions {
  /** The ztunnel pod's IP on this node. */
  ztunnelIp: string;
  /** The node's interface toward the ztunnel pod (its veth). */
  ztunnelIface: string;
  /** Source address of table-100 routes (the node's pod gateway, e.g. 10.244.1.1). */
  podGatewayIp: string;
  /** The node's own IP: host-originated traffic from it bypasses capture. */
  hostIp: string | undefined;
  backend: IptablesBackend;
  tunnel: NodeTunnelMode;
}

const m = (mark: number): string => formatMark(mark);

/** Our chains' contents; order matters (first match of RETURN wins). */
export function buildNodeChains(o: Pick<NodeRedirectOptions, 'ztunnelIp' | 'ztunnelIface' | 'hostIp'>): ChainRules[] {
  const setMark = (mark: number): string[] => ['-j', 'MARK', '--set-xmark', m(mark)];
  const hasMark = (mark: number): string[] => ['-m', 'mark', '--mark', m(mark)];
  const hasConnmark = (mark: number): string[] => ['-m', 'connmark', '--mark', m(mark)];
  const saveConnmark = (mark: number): string[] => [
    ...hasMark(mark),
    '-j', 'CONNMARK', '--save-mark', '--nfmask', `0x${mark.toString(16)}`, '--ctmask', `0x${mark.toString(16)}`,
  ];
  const prerouting: string[][] = [];
  for (const t of [TUNNELS.inbound, TUNNELS.outbound]) {
    // Packets coming back out of a tunnel are already decided.
    prerouting.push(['-i', t.nodeName, ...setMark(M.skip)], ['-i', t.nodeName, '-j', 'RETURN']);
  }
  prerouting.push(
    ['-p', 'udp', '-m', 'udp', '--dport', String(GENEVE_UDP_PORT), '-j', 'RETURN'],
    [...hasConnmark(M.hostOrZtunnel), ...setMark(M.skip)],
    [...hasMark(M.skip), '-j', 'RETURN'],
    // Replies to connections ztunnel opened with a pod's source IP go back to ztunnel.
    ['!', '-i', o.ztunnelIface, ...hasConnmark(M.ztunnelSpoofed), ...setMark(M.returnToZtunnel)],
    [...hasMark(M.returnToZtunnel), '-j', 'RETURN'],
    ['!', '-s', `${o.ztunnelIp}/32`, '-i', o.ztunnelIface, ...setMark(M.ztunnelSpoofed)],
    [...hasMark(M.skip), '-j', 'RETURN'],
    ['-i', o.ztunnelIface, ...setMark(M.hostOrZtunnel)],
    // Only TCP is proxied; UDP (DNS included) keeps the normal path.
    ['-p', 'udp', ...setMark(M.hostOrZtunnel)],
    [...hasMark(M.skip), '-j', 'RETURN'],
    ['-p', 'tcp', '-m', 'set', '--match-set', PODS_IPSET, 'src', ...setMark(M.outbound)],
  );
  const save = [saveConnmark(M.hostOrZtunnel), saveConnmark(M.ztunnelSpoofed)];
  const output: string[][] = o.hostIp === undefined ? [] : [['-s', `${o.hostIp}/32`, ...setMark(M.hostOrZtunnel)]];
  return [
    { table: 'mangle', builtin: 'PREROUTING', rules: prerouting },
    { table: 'mangle', builtin: 'INPUT', rules: save },
    { table: 'mangle', builtin: 'FORWARD', rules: save },
    { table: 'mangle', builtin: 'OUTPUT', rules: output },
    { table: 'mangle', builtin: 'POSTROUTING', rules: [saveConnmark(M.hostOrZtunnel)] },
    // Captured pods' packets are never SNATed/DNATed: ztunnel must see the real addresses.
    { table: 'nat', builtin: 'PREROUTING', rules: [[...hasMark(M.outbound), '-j', 'ACCEPT']] },
    { table: 'nat', builtin: 'POSTROUTING', rules: [[...hasMark(M.outbound), '-j', 'ACCEPT']] },
  ];
}

/** The chains to unhook/delete on removal (contents do not matter). */
export function buildNodeChainSkeleton(): ChainRules[] {
  return buildNodeChains({ ztunnelIp: '0.0.0.0', ztunnelIface: 'lo', hostIp: undefined }).map((c) => ({ ...c, rules: [] }));
}

export interface IpRuleSpec {
  pref: number;
  /** Arguments after `ip rule add`, without `pref`. */
  selector: string[];
  /** How `ip rule list pref N` prints it (to tell ours from someone else's). */
  printed: string;
}

export function buildNodeIpRules(): IpRuleSpec[] {
  return [
    { pref: NODE_RULE_PREFS.skip, selector: ['fwmark', m(M.skip), 'goto', String(MAIN_RULE_PREF)], printed: `fwmark ${m(M.skip)} goto ${MAIN_RULE_PREF}` },
    { pref: NODE_RULE_PREFS.outbound, selector: ['fwmark', m(M.outbound), 'lookup', String(NODE_TABLES.outbound)], printed: `fwmark ${m(M.outbound)} lookup ${NODE_TABLES.outbound}` },
    { pref: NODE_RULE_PREFS.returnPath, selector: ['fwmark', m(M.returnToZtunnel), 'lookup', String(NODE_TABLES.returnPath)], printed: `fwmark ${m(M.returnToZtunnel)} lookup ${NODE_TABLES.returnPath}` },
    { pref: NODE_RULE_PREFS.inbound, selector: ['lookup', String(NODE_TABLES.inbound)], printed: `from all lookup ${NODE_TABLES.inbound}` },
  ];
}

export function buildIpRuleSteps(rules: readonly IpRuleSpec[]): Step[] {
  return rules.map((r) => ({
    kind: 'ensure' as const,
    what: `ip rule ${r.pref}: ${r.printed}`,
    check: { cmd: { file: 'ip', args: ['-4', 'rule', 'list', 'pref', String(r.pref)] }, includes: r.printed },
    cmd: { file: 'ip', args: ['-4', 'rule', 'add', 'pref', String(r.pref), ...r.selector] },
  }));
}

export function buildIpRuleRemoveSteps(rules: readonly IpRuleSpec[]): Step[] {
  return rules.map((r) => ({
    kind: 'remove' as const,
    what: `remove ip rule ${r.pref}`,
    check: { cmd: { file: 'ip', args: ['-4', 'rule', 'list', 'pref', String(r.pref)] }, includes: r.printed },
    cmd: { file: 'ip', args: ['-4', 'rule', 'del', 'pref', String(r.pref), ...r.selector] },
  }));
}

export function buildRpFilterSteps(ifaces: readonly string[]): Step[] {
  // Replies and spoofed packets enter on interfaces the reverse route does not use.
  return ['all', 'default', ...ifaces].map((i) => ({
    kind: 'run' as const,
    what: `rp_filter=0 on ${i}`,
    cmd: { file: 'sysctl', args: ['-q', '-w', `net.ipv4.conf.${i}.rp_filter=0`] },
  }));
}

function routeReplace(table: number, spec: string[]): Step {
  return { kind: 'run', what: `table ${table}: ${spec.join(' ')}`, cmd: { file: 'ip', args: ['-4', 'route', 'replace', ...spec, 'table', String(table)] } };
}

export function buildNodeTunnelSteps(o: Pick<NodeRedirectOptions, 'ztunnelIp' | 'tunnel'>): Step[] {
  const steps: Step[] = [];
  for (const t of [TUNNELS.inbound, TUNNELS.outbound]) {
    const create =
      o.tunnel.kind === 'geneve'
        ? ['link', 'add', 'name', t.nodeName, 'type', 'geneve', 'id', String(t.geneveId), 'remote', o.ztunnelIp]
        : ['link', 'add', 'name', t.nodeName, 'type', 'veth', 'peer', 'name', t.ztunnelName, 'netns', o.tunnel.ztunnelNetns];
    steps.push(
      {
        kind: 'ensure',
        what: `tunnel ${t.nodeName} (${o.tunnel.kind})`,
        check: { cmd: { file: 'ip', args: ['link', 'show', 'dev', t.nodeName] } },
        cmd: { file: 'ip', args: create },
      },
      { kind: 'run', what: `address of ${t.nodeName}`, cmd: { file: 'ip', args: ['addr', 'replace', `${t.nodeIp}/${t.prefixLength}`, 'dev', t.nodeName] } },
      { kind: 'run', what: `${t.nodeName} up`, cmd: { file: 'ip', args: ['link', 'set', t.nodeName, 'up'] } },
    );
  }
  return steps;
}

export function buildNodeApplyPlan(o: NodeRedirectOptions): Step[] {
  return [
    ...buildNodeTunnelSteps(o),
    ...buildRpFilterSteps([TUNNELS.inbound.nodeName, TUNNELS.outbound.nodeName, o.ztunnelIface]),
    { kind: 'run', what: `ipset ${PODS_IPSET}`, cmd: { file: 'ipset', args: ['create', PODS_IPSET, 'hash:ip', '-exist'] } },
    ...buildIptablesApplySteps(o.backend, buildNodeChains(o)),
    routeReplace(NODE_TABLES.outbound, ['default', 'via', TUNNELS.outbound.ztunnelIp, 'dev', TUNNELS.outbound.nodeName]),
    routeReplace(NODE_TABLES.outbound, [`${o.ztunnelIp}/32`, 'dev', o.ztunnelIface, 'scope', 'link']),
    routeReplace(NODE_TABLES.returnPath, ['default', 'via', o.ztunnelIp, 'dev', o.ztunnelIface, 'onlink']),
    routeReplace(NODE_TABLES.inbound, [`${o.ztunnelIp}/32`, 'dev', o.ztunnelIface, 'scope', 'link']),
    ...buildIpRuleSteps(buildNodeIpRules()),
  ];
}

export function buildNodeRemovePlan(backend: IptablesBackend): Step[] {
  const steps: Step[] = [
    // Rules first: once they are gone no packet is steered into a half-removed path.
    ...buildIpRuleRemoveSteps(buildNodeIpRules()),
    ...buildIptablesRemoveSteps(backend, buildNodeChainSkeleton()),
  ];
  for (const table of [NODE_TABLES.inbound, NODE_TABLES.outbound, NODE_TABLES.returnPath]) {
    steps.push({ kind: 'try', what: `flush table ${table}`, cmd: { file: 'ip', args: ['-4', 'route', 'flush', 'table', String(table)] } });
  }
  steps.push({ kind: 'try', what: `destroy ipset ${PODS_IPSET}`, cmd: { file: 'ipset', args: ['destroy', PODS_IPSET] } });
  for (const t of [TUNNELS.inbound, TUNNELS.outbound]) {
    steps.push({
      kind: 'remove',
      what: `delete tunnel ${t.nodeName}`,
      check: { cmd: { file: 'ip', args: ['link', 'show', 'dev', t.nodeName] } },
      cmd: { file: 'ip', args: ['link', 'del', 'dev', t.nodeName] },
    });
  }
  return steps;
}
