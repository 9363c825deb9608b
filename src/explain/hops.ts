// The hop logic of `ztunnel-ts explain`: given the kernel state of the nodes and ztunnel
// netns a connection crosses and the ztunnels' own decisions (route, authorization), list
// every hop in order with the live object that decides it (an ipset member, a rule with its
// counter, a route, a policy) and why; stop at the first broken hop and say what is wrong
// and the command that fixes it.
// Must never: do I/O (readers and admin calls happen before; this is pure and replayable on
// recorded state), or judge a hop by anything but the recorded objects and the decisions the
// data path itself made.
// The rules checked are the ones src/redirect installs (names, marks, tables from
// constants.ts), so explain and the installer cannot disagree on what "present" means.

import {
  NODE_MARKS,
  NODE_RULE_PREFS,
  NODE_TABLES,
  PODS_IPSET,
  PROXY_PORTS,
  TUNNELS,
  ZTUNNEL_MARKS,
  ZTUNNEL_RULE_PREFS,
  ZTUNNEL_TABLES,
  formatMark,
} from '../redirect/constants.js';
import { buildChainName } from '../redirect/iptables.js';
import { buildPodRouteSpec } from '../redirect/node-agent.js';
import { formatHostPort, parseHostPort } from '../util/ip.js';
import type { AuthorizeDecision, RouteDecision } from './decision.js';
import { findLink, findRoute, type IpRoute, type KernelSnapshot, type SavedRule } from './kernel-snapshot.js';

export type HopStep =
  | 'source-ipset'
  | 'source-mark'
  | 'source-ip-rule'
  | 'source-route'
  | 'source-ztunnel-tproxy'
  | 'source-ztunnel-local'
  | 'route'
  | 'same-node'
  | 'dest-route'
  | 'dest-ztunnel-tproxy'
  | 'dest-ztunnel-local'
  | 'authorize'
  | 'deliver';

export interface Hop {
  step: HopStep;
  /** Where the deciding object lives: a snapshot label (`node ambient-worker`) or `ztunnel <node>`. */
  where: string;
  ok: boolean;
  /** The rule / route / member / decision line that decides this hop. */
  object: string;
  counter?: { packets: number; bytes: number };
  why: string;
  /** The command (or edit) that repairs a broken hop, to run where `where` says. */
  fix?: string;
}

export interface ExplainInput {
  /** Source IP and original destination, as the client sent them. */
  src: string;
  dst: { ip: string; port: number };
  /** The decision of the source node's ztunnel (`/debug/route`); for a non-mesh source, any ztunnel's. */
  route: RouteDecision;
  /** The destination ztunnel's `/debug/authorize` for (src, target, source identity). */
  authorization: AuthorizeDecision | undefined;
  sourceNode: KernelSnapshot;
  /** Needed when the source is captured. */
  sourceZtunnel: KernelSnapshot | undefined;
  /** Needed when a ztunnel on the destination node captures the connection (HBONE or 15006). */
  destNode: KernelSnapshot | undefined;
  destZtunnel: KernelSnapshot | undefined;
}

export type PathKind = 'hbone' | 'same-node' | 'passthrough' | 'plaintext-inbound' | 'not-captured' | 'refused';

export interface Explanation {
  src: string;
  dst: string;
  path: PathKind;
  ok: boolean;
  /** The step of the first broken hop. */
  brokenAt?: HopStep;
  hops: Hop[];
}

const REDIRECT_NODE = 'ztunnel-ts redirect node';
const REDIRECT_ZTUNNEL = 'ztunnel-ts redirect ztunnel';
const PREROUTING_CHAIN = buildChainName('PREROUTING');

class Chain {
  readonly hops: Hop[] = [];
  broken = false;
  add(hop: Hop): boolean {
    this.hops.push(hop);
    if (!hop.ok) this.broken = true;
    return hop.ok;
  }
}

function counterOf(r: SavedRule): { packets: number; bytes: number } {
  return { packets: r.packets, bytes: r.bytes };
}

function unreadable(snap: KernelSnapshot): string {
  return snap.errors.length === 0 ? '' : ` (could not read all of it: ${snap.errors.join('; ')})`;
}

function findHook(snap: KernelSnapshot): SavedRule | undefined {
  return snap.iptables.find((r) => r.table === 'mangle' && r.chain === 'PREROUTING' && r.spec === `-j ${PREROUTING_CHAIN}`);
}

function findOurRule(snap: KernelSnapshot, ...parts: string[]): SavedRule | undefined {
  return snap.iptables.find((r) => r.table === 'mangle' && r.chain === PREROUTING_CHAIN && parts.every((p) => hasWords(r.spec, p)));
}

/** `spec` holds `part` as whole words (so `--on-port 1500` does not match `--on-port 15001`). */
function hasWords(spec: string, part: string): boolean {
  return ` ${spec} `.includes(` ${part} `);
}

function findRule(snap: KernelSnapshot, mark: string | undefined, table: string) {
  return snap.rules.find((r) => r.fwmark === mark && r.table === table);
}

function ipOf(hostPort: string | undefined): string | undefined {
  return hostPort === undefined ? undefined : parseHostPort(hostPort)?.host;
}

// ---------------------------------------------------------------- source node

function explainSourceCapture(c: Chain, input: ExplainInput): void {
  const snap = input.sourceNode;
  const where = snap.label;
  const members = snap.ipsets.get(PODS_IPSET);
  if (members === undefined) {
    c.add({ step: 'source-ipset', where, ok: false, object: `ipset ${PODS_IPSET}: missing`, why: `the node has no ipset ${PODS_IPSET}, so nothing is captured${unreadable(snap)}`, fix: REDIRECT_NODE });
    return;
  }
  if (!members.has(input.src)) {
    c.add({
      step: 'source-ipset',
      where,
      ok: false,
      object: `ipset ${PODS_IPSET}: ${members.size} members, not ${input.src}`,
      why: `${input.src} (${input.route.source?.name ?? '?'}, HBONE) is not in ipset ${PODS_IPSET}: its packets are not marked, leave by the main table and bypass ztunnel (the node agent adds HBONE pods of this node; is it running?)`,
      fix: `ipset add ${PODS_IPSET} ${input.src}`,
    });
    return;
  }
  if (!c.add({ step: 'source-ipset', where, ok: true, object: `add ${PODS_IPSET} ${input.src}`, why: `${input.src} (${input.route.source?.name ?? '?'}) is a captured pod of this node` })) return;

  const mark = formatMark(NODE_MARKS.outbound);
  const hook = findHook(snap);
  const rule = findOurRule(snap, `--match-set ${PODS_IPSET} src`, `--set-xmark ${mark}`);
  if (hook === undefined || rule === undefined) {
    c.add({
      step: 'source-mark',
      where,
      ok: false,
      object: hook === undefined ? `mangle PREROUTING: no -j ${PREROUTING_CHAIN}` : `mangle ${PREROUTING_CHAIN}: no rule marking ${PODS_IPSET} sources ${mark}`,
      why: `TCP from ${input.src} is not marked ${mark}, so rule ${NODE_RULE_PREFS.outbound} never sends it to table ${NODE_TABLES.outbound}${unreadable(snap)}`,
      fix: REDIRECT_NODE,
    });
    return;
  }
  if (!c.add({ step: 'source-mark', where, ok: true, object: rule.text, counter: counterOf(rule), why: `TCP from members of ${PODS_IPSET} gets fwmark ${mark} (and the nat chains leave it un-NATed)` })) return;

  const ipRule = findRule(snap, mark, String(NODE_TABLES.outbound));
  if (ipRule === undefined) {
    c.add({
      step: 'source-ip-rule',
      where,
      ok: false,
      object: `ip rule: nothing sends fwmark ${mark} to table ${NODE_TABLES.outbound}`,
      why: `marked packets fall through to the main table and go straight to ${input.dst.ip}, bypassing ztunnel${unreadable(snap)}`,
      fix: `ip -4 rule add pref ${NODE_RULE_PREFS.outbound} fwmark ${mark} lookup ${NODE_TABLES.outbound}`,
    });
    return;
  }
  if (!c.add({ step: 'source-ip-rule', where, ok: true, object: ipRule.text, why: `fwmark ${mark} selects table ${NODE_TABLES.outbound}` })) return;

  const out = TUNNELS.outbound;
  const route = findRoute(snap, String(NODE_TABLES.outbound), input.dst.ip);
  const fix = `ip -4 route replace default via ${out.ztunnelIp} dev ${out.nodeName} table ${NODE_TABLES.outbound}`;
  if (route === undefined || route.dev !== out.nodeName) {
    c.add({
      step: 'source-route',
      where,
      ok: false,
      object: route === undefined ? `table ${NODE_TABLES.outbound}: no route to ${input.dst.ip}` : route.text,
      why:
        route === undefined
          ? `table ${NODE_TABLES.outbound} has no route for ${input.dst.ip}: the marked packet is dropped (network unreachable)${unreadable(snap)}`
          : `table ${NODE_TABLES.outbound} sends ${input.dst.ip} out by ${route.dev ?? '?'}, not ${out.nodeName}: the packet never reaches ztunnel's ${out.ztunnelName}`,
      fix,
    });
    return;
  }
  const link = findLink(snap, out.nodeName);
  if (link === undefined || !link.up) {
    c.add({
      step: 'source-route',
      where,
      ok: false,
      object: `${route.text}; link ${out.nodeName} ${link === undefined ? 'missing' : 'down'}`,
      why: `the route leaves by ${out.nodeName}, which is ${link === undefined ? 'missing' : 'down'}`,
      fix: link === undefined ? REDIRECT_NODE : `ip link set ${out.nodeName} up`,
    });
    return;
  }
  c.add({ step: 'source-route', where, ok: true, object: route.text, why: `leaves by ${out.nodeName} (${link.kind ?? 'link'} ${link.addresses.join(', ')}) to ztunnel's ${out.ztunnelName} ${out.ztunnelIp}` });
}

// ---------------------------------------------------------------- a ztunnel netns

function explainTproxy(c: Chain, snap: KernelSnapshot | undefined, step: 'source-ztunnel-tproxy' | 'dest-ztunnel-tproxy', iface: string, port: number, dport: number | undefined): void {
  if (snap === undefined) {
    c.add({ step, where: 'ztunnel netns', ok: false, object: 'not read', why: 'the ztunnel netns state was not given' });
    return;
  }
  const where = snap.label;
  const hook = findHook(snap);
  const parts = [`-i ${iface}`, `--on-port ${port}`];
  if (dport !== undefined) parts.push(`--dport ${dport}`);
  const rule = findOurRule(snap, ...parts);
  const what = dport === undefined ? `TCP arriving on ${iface}` : `TCP to port ${dport} arriving on ${iface}`;
  if (hook === undefined || rule === undefined) {
    c.add({
      step,
      where,
      ok: false,
      object: hook === undefined ? `mangle PREROUTING: no -j ${PREROUTING_CHAIN}` : `mangle ${PREROUTING_CHAIN}: no TPROXY ${iface} → ${port}`,
      why: `${what} is not handed to ztunnel's :${port}; the kernel forwards or drops it instead${unreadable(snap)}`,
      fix: `${REDIRECT_ZTUNNEL}   # in the ztunnel pod's netns; reloads ${PREROUTING_CHAIN} in order`,
    });
    return;
  }
  c.add({ step, where, ok: true, object: rule.text, counter: counterOf(rule), why: `${what} goes to ztunnel's transparent listener :${port} (mark ${formatMark(ZTUNNEL_MARKS.tproxy, ZTUNNEL_MARKS.mask)})` });
}

function explainLocalDelivery(c: Chain, snap: KernelSnapshot | undefined, step: 'source-ztunnel-local' | 'dest-ztunnel-local'): void {
  if (snap === undefined) return;
  const where = snap.label;
  const mark = formatMark(ZTUNNEL_MARKS.tproxy, ZTUNNEL_MARKS.mask);
  const table = String(ZTUNNEL_TABLES.local);
  const rule = findRule(snap, mark, table);
  const local = snap.routes.find((r: IpRoute) => r.table === table && r.type === 'local' && r.dst === 'default' && r.dev === 'lo');
  if (rule === undefined) {
    c.add({
      step,
      where,
      ok: false,
      object: `ip rule: nothing sends fwmark ${mark} to table ${table}`,
      why: `TPROXY-marked packets are routed, not delivered to ztunnel's socket${unreadable(snap)}`,
      fix: `ip -4 rule add pref ${ZTUNNEL_RULE_PREFS.tproxy} fwmark ${mark} lookup ${table}`,
    });
    return;
  }
  if (local === undefined) {
    c.add({
      step,
      where,
      ok: false,
      object: `table ${table}: no local 0.0.0.0/0 dev lo`,
      why: `table ${table} does not make every address local: TPROXY-marked packets are not delivered to ztunnel${unreadable(snap)}`,
      fix: `ip -4 route replace local 0.0.0.0/0 dev lo table ${table}`,
    });
    return;
  }
  c.add({ step, where, ok: true, object: `${rule.text}; ${local.text}`, why: `marked packets are delivered locally, to the transparent socket` });
}

// ---------------------------------------------------------------- ztunnel's decision

function describeService(r: RouteDecision): string {
  const s = r.service;
  if (s === undefined) return '';
  const eps = s.endpoints.map((e) => `${e.workload} ${e.ips.join(',')} weight ${e.weight} ${e.status}${e.usable ? '' : ` (unusable: ${e.why ?? '?'})`}`);
  return `VIP ${r.dst} → service ${s.hostname} port ${s.port}→${s.targetPort || 'named'} → endpoints [${eps.join('; ')}]`;
}

function explainRoute(c: Chain, input: ExplainInput, captured: boolean): void {
  const r = input.route;
  const where = `ztunnel ${r.node ?? '?'}`;
  const svc = describeService(r);
  if (captured && (r.source === undefined || (r.node !== undefined && r.source.node !== r.node))) {
    c.add({
      step: 'route',
      where,
      ok: false,
      object: r.source === undefined ? `no workload has the address ${input.src}` : `${r.source.name} is on node ${r.source.node}`,
      why: `ztunnel refuses the connection (unknown source workload): it serves only workloads of node ${r.node ?? '?'} and finds the source by IP`,
      fix: `the workload with IP ${input.src} must be in the mesh config with node: ${r.node ?? '<node>'} (check: curl -s http://127.0.0.1:15000/config_dump)`,
    });
    return;
  }
  if (r.kind === 'reject') {
    const code = r.reject?.code ?? 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM';
    const unusable = (r.service?.endpoints ?? []).map((e) => `${e.workload}: ${e.why ?? 'usable'}`);
    c.add({
      step: 'route',
      where,
      ok: false,
      object: svc === '' ? `${r.dst}: refused` : svc,
      why: `${code}: ${r.reject?.reason ?? 'refused'}`,
      fix:
        code === 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM'
          ? r.service === undefined || r.service.endpoints.length === 0
            ? `give ${r.service?.name ?? 'the service'} an endpoint (a workload whose services map has ${r.service?.hostname ?? 'it'}:${input.dst.port})`
            : `make an endpoint usable (${unusable.join('; ')}): status Healthy and capacity > 0 on the workload, or loadBalancer.healthPolicy: AllowAll on ${r.service.name}`
          : `do not connect to ztunnel's own ports`,
    });
    return;
  }
  const src = r.source === undefined ? input.src : captured ? `${r.source.name} (${r.source.identity})` : r.source.name;
  switch (r.kind) {
    case 'hbone': {
      const dest = r.destination;
      const pieces = [svc, `${dest?.name ?? '?'} on node ${dest?.node ?? '?'}`];
      if (r.sameNode === true) pieces.push(`same node: handed to the inbound side in process, authority ${r.hboneTarget ?? '?'}`);
      else pieces.push(`HBONE to ${r.actualDst ?? '?'}, authority ${r.hboneTarget ?? '?'}, expects ${(r.expectedIdentities ?? []).join(' or ')}`);
      c.add({
        step: 'route',
        where,
        ok: true,
        object: pieces.filter((p) => p !== '').join(' → '),
        why: captured ? `from ${src}: the destination is an HBONE workload` : `the destination is the HBONE workload ${dest?.name ?? '?'}; the non-mesh client ${src} reaches it in plaintext, captured by its node`,
      });
      return;
    }
    case 'tcp':
      c.add({ step: 'route', where, ok: true, object: [svc, `${r.destination?.name ?? '?'} (TCP, not in the mesh) → plain TCP to ${r.target ?? '?'}`].filter((p) => p !== '').join(' → '), why: `the destination workload does not speak HBONE: ztunnel connects it in plain TCP from ${input.src}` });
      return;
    case 'passthrough':
      c.add({ step: 'route', where, ok: true, object: `${r.dst}: unknown to the mesh → passthrough to ${r.target ?? r.dst}`, why: `no workload or service has ${input.dst.ip}: ztunnel passes the connection through in plain TCP from ${input.src}` });
      return;
  }
}

// ---------------------------------------------------------------- destination node

function findPodGateway(snap: KernelSnapshot): string | undefined {
  const table = String(NODE_TABLES.inbound);
  const podRoute = snap.routes.find((r) => r.table === table && r.dev === TUNNELS.inbound.nodeName && r.prefsrc !== undefined);
  if (podRoute?.prefsrc !== undefined) return podRoute.prefsrc;
  const zt = snap.routes.find((r) => r.table === table && r.scope === 'link' && r.dev !== undefined);
  const addr = zt?.dev === undefined ? undefined : findLink(snap, zt.dev)?.addresses[0];
  return addr?.split('/')[0];
}

function explainDestNode(c: Chain, input: ExplainInput, targetIp: string): void {
  const snap = input.destNode;
  if (snap === undefined) {
    c.add({ step: 'dest-route', where: 'destination node', ok: false, object: 'not read', why: 'the destination node state was not given' });
    return;
  }
  const where = snap.label;
  const table = String(NODE_TABLES.inbound);
  const rule = snap.rules.find((r) => r.priority === NODE_RULE_PREFS.inbound && r.table === table && r.fwmark === undefined);
  if (rule === undefined) {
    c.add({
      step: 'dest-route',
      where,
      ok: false,
      object: `ip rule: no \`${NODE_RULE_PREFS.inbound}: from all lookup ${table}\``,
      why: `packets to ${targetIp} take the main table straight to the pod, bypassing the destination ztunnel${unreadable(snap)}`,
      fix: `ip -4 rule add pref ${NODE_RULE_PREFS.inbound} lookup ${table}`,
    });
    return;
  }
  const inb = TUNNELS.inbound;
  const route = findRoute(snap, table, targetIp);
  if (route === undefined || route.dev !== inb.nodeName) {
    const gw = findPodGateway(snap) ?? '<pod gateway IP>';
    c.add({
      step: 'dest-route',
      where,
      ok: false,
      object: route === undefined ? `table ${table}: no route to ${targetIp}` : route.text,
      why:
        route === undefined
          ? `table ${table} has no route for ${targetIp}: the connection goes by the main table straight to the pod, never through ztunnel (the node agent adds one per HBONE pod; is it running?)${unreadable(snap)}`
          : `table ${table} sends ${targetIp} by ${route.dev ?? '?'}, not ${inb.nodeName}`,
      fix: `ip -4 route replace ${buildPodRouteSpec(targetIp, gw).join(' ')} table ${table}`,
    });
    return;
  }
  const link = findLink(snap, inb.nodeName);
  if (link === undefined || !link.up) {
    c.add({ step: 'dest-route', where, ok: false, object: `${route.text}; link ${inb.nodeName} ${link === undefined ? 'missing' : 'down'}`, why: `the route leaves by ${inb.nodeName}, which is ${link === undefined ? 'missing' : 'down'}`, fix: link === undefined ? REDIRECT_NODE : `ip link set ${inb.nodeName} up` });
    return;
  }
  c.add({ step: 'dest-route', where, ok: true, object: `${rule.text}; ${route.text}`, why: `${targetIp} is a captured pod of this node: in by ${inb.nodeName} to ztunnel's ${inb.ztunnelName}` });
}

// ---------------------------------------------------------------- authorization and delivery

function explainAuthorize(c: Chain, input: ExplainInput, target: string): void {
  const a = input.authorization;
  if (a === undefined) {
    c.add({ step: 'authorize', where: 'destination ztunnel', ok: false, object: 'no decision', why: 'the destination ztunnel\'s authorization decision was not given' });
    return;
  }
  const where = `ztunnel ${a.node ?? '?'}`;
  const who = a.identity ?? `plaintext client ${a.src}`;
  const listed = a.policies.map((p) => `${p.key} (${p.action}${p.dryRun ? ', dry-run' : ''}${p.matches ? ', matches' : ''})`);
  if (a.decision === 'unknown-workload') {
    c.add({ step: 'authorize', where, ok: false, object: `no workload at ${target}`, why: `${a.reason ?? 'unknown workload'}: the destination ztunnel refuses the connection`, fix: `the workload at ${target} must be in the mesh config on node ${a.node ?? '?'}` });
    return;
  }
  if (a.decision === 'deny') {
    const byPolicy = a.policy !== undefined && a.policy !== '';
    const [ns, name] = byPolicy ? (a.policy as string).split('/') : ['', ''];
    c.add({
      step: 'authorize',
      where,
      ok: false,
      object: byPolicy ? `Deny policy ${a.policy as string}` : `allow policies [${listed.join('; ')}]: none matches`,
      why: `${who} → ${a.workload?.name ?? '?'} port ${parseHostPort(a.dst)?.port ?? '?'}: ${a.reason ?? 'denied'}`,
      fix: byPolicy
        ? `remove or narrow the Deny policy: kubectl -n ${ns} edit authorizationpolicy ${name} (local config: its entry under policies:)`
        : `add an Allow rule matching ${who} port ${parseHostPort(a.dst)?.port ?? '?'} to one of: ${a.policies.filter((p) => p.action === 'Allow').map((p) => p.key).join(', ')}`,
    });
    return;
  }
  const allows = a.policies.filter((p) => p.action === 'Allow' && !p.dryRun && p.matches).map((p) => p.key);
  c.add({
    step: 'authorize',
    where,
    ok: true,
    object: a.policies.length === 0 ? 'no policy applies' : `policies [${listed.join('; ')}]`,
    why: `${who} → ${a.workload?.name ?? '?'} port ${parseHostPort(a.dst)?.port ?? '?'} allowed${allows.length > 0 ? ` by ${allows.join(', ')}` : ' (no Allow policy applies, no Deny matches)'}${a.dryRunNotes ? `; ${a.dryRunNotes.join('; ')}` : ''}`,
  });
}

function explainDelivery(c: Chain, snap: KernelSnapshot, target: string, how: string): void {
  const ip = ipOf(target) ?? target;
  const route = findRoute(snap, 'main', ip);
  if (route === undefined) {
    c.add({ step: 'deliver', where: snap.label, ok: false, object: `main table: no route to ${ip}`, why: `the node has no route to ${ip}${unreadable(snap)}`, fix: `ip -4 route add ${ip}/32 dev <pod veth> scope link` });
    return;
  }
  c.add({ step: 'deliver', where: snap.label, ok: true, object: route.text, why: how });
}

// ---------------------------------------------------------------- the chain

/** A source is captured when the mesh says it is HBONE, or when the kernel captures it anyway. */
function isCaptured(input: ExplainInput): boolean {
  return input.route.source?.protocol === 'HBONE' || input.sourceNode.ipsets.get(PODS_IPSET)?.has(input.src) === true;
}

export function explainPath(input: ExplainInput): Hop[] {
  const c = new Chain();
  const r = input.route;
  const captured = isCaptured(input);

  if (captured) {
    explainSourceCapture(c, input);
    if (c.broken) return c.hops;
    explainTproxy(c, input.sourceZtunnel, 'source-ztunnel-tproxy', TUNNELS.outbound.ztunnelName, PROXY_PORTS.outbound, undefined);
    if (c.broken) return c.hops;
    explainLocalDelivery(c, input.sourceZtunnel, 'source-ztunnel-local');
    if (c.broken) return c.hops;
  } else {
    const main = findRoute(input.sourceNode, 'main', input.dst.ip);
    c.add({
      step: 'source-ipset',
      where: input.sourceNode.label,
      ok: true,
      object: `${input.src} not in ipset ${PODS_IPSET}${main === undefined ? '' : `; ${main.text}`}`,
      why: `${r.source === undefined ? `${input.src} is not a mesh workload` : `${r.source.name} is a ${r.source.protocol} workload`}: not captured, its packets take the node's main table`,
    });
  }

  explainRoute(c, input, captured);
  if (c.broken) return c.hops;

  const target = r.target ?? r.dst;
  const targetIp = ipOf(target) ?? input.dst.ip;
  if (r.kind === 'hbone') {
    if (captured && r.sameNode === true) {
      c.add({ step: 'same-node', where: `ztunnel ${r.node ?? '?'}`, ok: true, object: `${r.destination?.name ?? '?'} is on node ${r.node ?? '?'}`, why: 'no 15008 hop: the node would route a packet with the pod\'s own source IP by the main table, so ztunnel delivers it itself' });
    } else {
      explainDestNode(c, input, targetIp);
      if (c.broken) return c.hops;
      if (captured) explainTproxy(c, input.destZtunnel, 'dest-ztunnel-tproxy', TUNNELS.inbound.ztunnelName, PROXY_PORTS.inbound, PROXY_PORTS.inbound);
      else explainTproxy(c, input.destZtunnel, 'dest-ztunnel-tproxy', TUNNELS.inbound.ztunnelName, PROXY_PORTS.inboundPlaintext, undefined);
      if (c.broken) return c.hops;
      explainLocalDelivery(c, input.destZtunnel, 'dest-ztunnel-local');
      if (c.broken) return c.hops;
    }
    explainAuthorize(c, input, target);
    if (c.broken) return c.hops;
    const deliverNode = captured && r.sameNode === true ? input.sourceNode : input.destNode ?? input.sourceNode;
    explainDelivery(c, deliverNode, target, `ztunnel ${input.authorization?.node ?? r.destination?.node ?? '?'} connects ${target} from ${input.src} (IP_TRANSPARENT): the app sees the client's own IP ${input.src}`);
    return c.hops;
  }
  // tcp / passthrough: no ztunnel on the far side.
  const how = captured
    ? `ztunnel ${r.node ?? '?'} connects ${target} in plain TCP from ${input.src} (spoofed, fwmark ${formatMark(NODE_MARKS.ztunnelSpoofed)} skips capture): the destination sees ${input.src}`
    : `not captured: the kernel routes ${input.src} → ${target} directly, no ztunnel is involved`;
  explainDelivery(c, input.sourceNode, target, how);
  return c.hops;
}

function classify(input: ExplainInput): PathKind {
  const r = input.route;
  const captured = isCaptured(input);
  if (r.kind === 'reject') return 'refused';
  if (r.kind === 'hbone') {
    if (!captured) return 'plaintext-inbound';
    return r.sameNode === true ? 'same-node' : 'hbone';
  }
  return captured ? 'passthrough' : 'not-captured';
}

/** explainPath() plus the summary: the JSON form of `explain --json`. */
export function buildExplanation(input: ExplainInput): Explanation {
  const hops = explainPath(input);
  const broken = hops.find((h) => !h.ok);
  const e: Explanation = { src: input.src, dst: formatHostPort(input.dst.ip, input.dst.port), path: classify(input), ok: broken === undefined, hops };
  if (broken !== undefined) e.brokenAt = broken.step;
  return e;
}
