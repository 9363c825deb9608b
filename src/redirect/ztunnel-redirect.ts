// The ztunnel side of the capture path (ztunnel-init's role; upstream ztunnel's former
// scripts/ztunnel-redirect.sh, https://github.com/istio/ztunnel), run in the ztunnel pod's netns: TPROXY of what arrives on pistioout (→15001) and
// pistioin (→15008 for HBONE, else →15006), and the marks + `local` routes that deliver
// packets for foreign addresses to ztunnel's transparent sockets.
// Must never: redirect traffic arriving on eth0 (peers reach 15008 through the node's
// table 100 and pistioin), or remove anything it did not add.
// Invariant: `-m socket --transparent` comes before the TPROXY rules; without it the
// packets of an established spoofed connection are not delivered locally (verified on Linux 6.x with TPROXY).

import {
  DEFAULT_TPROXY_ON_IP,
  KERNEL_LOCAL_PORT_RANGE,
  PROXY_PORTS,
  TUNNELS,
  ZTUNNEL_MARKS as Z,
  ZTUNNEL_RULE_PREFS,
  ZTUNNEL_LOCAL_PORT_RANGE,
  ZTUNNEL_TABLES,
  formatMark,
} from './constants.js';
import { buildIptablesApplySteps, buildIptablesRemoveSteps, type ChainRules, type IptablesBackend } from './iptables.js';
import { buildIpRuleRemoveSteps, buildIpRuleSteps, buildRpFilterSteps, type IpRuleSpec } from './node-redirect.js';
import type { Step } from './plan.js';

export interface ZtunnelRedirectOptions {
  /** The node's address reachable on `iface` (the pod gateway). */
  nodeIp: string;
  /** ztunnel's own pod IP: traffic to it is never re-marked. */
  ztunnelIp: string;
  /** ztunnel's pod interface toward the node (eth0). */
  iface: string;
  backend: IptablesBackend;
  /** geneve: create pistioin/pistioout here; veth: the node side created them. */
  tunnel: 'geneve' | 'veth';
  tproxyOnIp: string;
}

const TPROXY_MARK = formatMark(Z.tproxy, Z.mask);

export function buildZtunnelChains(o: Pick<ZtunnelRedirectOptions, 'ztunnelIp' | 'iface' | 'tproxyOnIp'>): ChainRules[] {
  const tproxy = (port: number): string[] => [
    '-j', 'TPROXY', '--on-port', String(port), '--on-ip', o.tproxyOnIp, '--tproxy-mark', TPROXY_MARK,
  ];
  const inTun = TUNNELS.inbound.ztunnelName;
  const outTun = TUNNELS.outbound.ztunnelName;
  return [
    {
      table: 'mangle',
      builtin: 'PREROUTING',
      rules: [
        ['-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'MARK', '--set-xmark', TPROXY_MARK],
        ['-m', 'mark', '--mark', TPROXY_MARK, '-j', 'RETURN'],
        ['-i', inTun, '-p', 'tcp', '-m', 'tcp', '--dport', String(PROXY_PORTS.inbound), ...tproxy(PROXY_PORTS.inbound)],
        ['-i', outTun, '-p', 'tcp', ...tproxy(PROXY_PORTS.outbound)],
        ['-i', inTun, '-p', 'tcp', ...tproxy(PROXY_PORTS.inboundPlaintext)],
        // Replies to connections ztunnel made with a pod's source IP (the node's table 102).
        ['-i', o.iface, '-p', 'tcp', '!', '-d', `${o.ztunnelIp}/32`, '-j', 'MARK', '--set-xmark', formatMark(Z.origSrcReturn, Z.mask)],
      ],
    },
  ];
}

export function buildZtunnelChainSkeleton(): ChainRules[] {
  return buildZtunnelChains({ ztunnelIp: '0.0.0.0', iface: 'lo', tproxyOnIp: DEFAULT_TPROXY_ON_IP }).map((c) => ({ ...c, rules: [] }));
}

export function buildZtunnelIpRules(): IpRuleSpec[] {
  const t = String(ZTUNNEL_TABLES.local);
  return [
    { pref: ZTUNNEL_RULE_PREFS.tproxy, selector: ['fwmark', TPROXY_MARK, 'lookup', t], printed: `fwmark ${TPROXY_MARK} lookup ${t}` },
    {
      pref: ZTUNNEL_RULE_PREFS.origSrcReturn,
      selector: ['fwmark', formatMark(Z.origSrcReturn, Z.mask), 'lookup', t],
      printed: `fwmark ${formatMark(Z.origSrcReturn, Z.mask)} lookup ${t}`,
    },
  ];
}

/**
 * ztunnel's spoofed upstream sockets take the pod's IP with a kernel-chosen port, from a port
 * space separate from the pod's own; the kernel's choice for one (source IP, destination) is a
 * sequence shared by all namespaces, so pod and ztunnel can pick the same port at the same
 * instant. An odd-based range in this netns keeps ztunnel's ports off the pods' parity.
 */
export function buildLocalPortRangeStep(range: { low: number; high: number }): Step {
  return {
    kind: 'run',
    what: `connect() source ports ${range.low}-${range.high}`,
    cmd: { file: 'sysctl', args: ['-q', '-w', `net.ipv4.ip_local_port_range=${range.low} ${range.high}`] },
  };
}

function route(table: number, spec: string[]): Step {
  return { kind: 'run', what: `table ${table}: ${spec.join(' ')}`, cmd: { file: 'ip', args: ['-4', 'route', 'replace', ...spec, 'table', String(table)] } };
}

export function buildZtunnelApplyPlan(o: ZtunnelRedirectOptions): Step[] {
  const steps: Step[] = [];
  for (const t of [TUNNELS.inbound, TUNNELS.outbound]) {
    if (o.tunnel === 'geneve') {
      steps.push({
        kind: 'ensure',
        what: `tunnel ${t.ztunnelName} (geneve)`,
        check: { cmd: { file: 'ip', args: ['link', 'show', 'dev', t.ztunnelName] } },
        cmd: { file: 'ip', args: ['link', 'add', 'name', t.ztunnelName, 'type', 'geneve', 'id', String(t.geneveId), 'remote', o.nodeIp] },
      });
    } else {
      steps.push({
        kind: 'run',
        what: `tunnel ${t.ztunnelName} exists (veth made by \`redirect node --ztunnel-netns\`)`,
        cmd: { file: 'ip', args: ['link', 'show', 'dev', t.ztunnelName] },
      });
    }
    steps.push(
      { kind: 'run', what: `address of ${t.ztunnelName}`, cmd: { file: 'ip', args: ['addr', 'replace', `${t.ztunnelIp}/${t.prefixLength}`, 'dev', t.ztunnelName] } },
      { kind: 'run', what: `${t.ztunnelName} up`, cmd: { file: 'ip', args: ['link', 'set', t.ztunnelName, 'up'] } },
    );
  }
  steps.push(
    { kind: 'run', what: 'lo up', cmd: { file: 'ip', args: ['link', 'set', 'lo', 'up'] } },
    ...buildRpFilterSteps([o.iface, TUNNELS.inbound.ztunnelName, TUNNELS.outbound.ztunnelName]),
    buildLocalPortRangeStep(ZTUNNEL_LOCAL_PORT_RANGE),
    ...buildIptablesApplySteps(o.backend, buildZtunnelChains(o)),
    route(ZTUNNEL_TABLES.local, ['local', '0.0.0.0/0', 'dev', 'lo']),
    route(ZTUNNEL_TABLES.outbound, [`${o.nodeIp}/32`, 'dev', o.iface, 'scope', 'link']),
    route(ZTUNNEL_TABLES.outbound, ['default', 'via', TUNNELS.outbound.nodeIp, 'dev', TUNNELS.outbound.ztunnelName]),
    route(ZTUNNEL_TABLES.inbound, [`${o.nodeIp}/32`, 'dev', o.iface, 'scope', 'link']),
    route(ZTUNNEL_TABLES.inbound, ['default', 'via', TUNNELS.inbound.nodeIp, 'dev', TUNNELS.inbound.ztunnelName]),
    ...buildIpRuleSteps(buildZtunnelIpRules()),
  );
  return steps;
}

export function buildZtunnelRemovePlan(backend: IptablesBackend): Step[] {
  const steps: Step[] = [
    ...buildIpRuleRemoveSteps(buildZtunnelIpRules()),
    ...buildIptablesRemoveSteps(backend, buildZtunnelChainSkeleton()),
  ];
  steps.push({ ...buildLocalPortRangeStep(KERNEL_LOCAL_PORT_RANGE), kind: 'try' });
  for (const table of [ZTUNNEL_TABLES.local, ZTUNNEL_TABLES.outbound, ZTUNNEL_TABLES.inbound]) {
    steps.push({ kind: 'try', what: `flush table ${table}`, cmd: { file: 'ip', args: ['-4', 'route', 'flush', 'table', String(table)] } });
  }
  for (const t of [TUNNELS.inbound, TUNNELS.outbound]) {
    steps.push(
      { kind: 'try', what: `address of ${t.ztunnelName}`, cmd: { file: 'ip', args: ['addr', 'del', `${t.ztunnelIp}/${t.prefixLength}`, 'dev', t.ztunnelName] } },
      {
        // A GENEVE end is ours; a veth end belongs to the node side (`redirect node --remove`).
        kind: 'remove',
        what: `delete geneve ${t.ztunnelName}`,
        check: { cmd: { file: 'ip', args: ['-d', 'link', 'show', 'dev', t.ztunnelName] }, includes: 'geneve' },
        cmd: { file: 'ip', args: ['link', 'del', 'dev', t.ztunnelName] },
      },
    );
  }
  return steps;
}
