// Resolving what the plans need from the netns being programmed (interfaces, addresses,
// iptables backend, GENEVE or veth), then applying or removing the node and ztunnel sides.
// Must never: guess silently; a value that cannot be found is a clear message, and
// --dry-run only runs read-only look-ups.

import { findDefaultRoute, findInterfaceAddress, findInterfaceTo, kernelHasGeneve, linkExists } from './discover.js';
import { detectIptablesBackend, type IptablesBackend } from './iptables.js';
import { buildNodeApplyPlan, buildNodeRemovePlan, type NodeRedirectOptions, type NodeTunnelMode } from './node-redirect.js';
import { createRunner, describeFailure, executePlan, formatPlan, type Runner, type Step } from './plan.js';
import { TUNNELS, DEFAULT_TPROXY_ON_IP } from './constants.js';
import { buildZtunnelApplyPlan, buildZtunnelRemovePlan, type ZtunnelRedirectOptions } from './ztunnel-redirect.js';

export type RedirectResult = { ok: true; text: string } | { ok: false; message: string };

export interface NodeRedirectInput {
  ztunnelIp: string;
  ztunnelIface?: string | undefined;
  podGatewayIp?: string | undefined;
  hostIp?: string | undefined;
  /** Named netns of the ztunnel pod; needed for the veth fallback. */
  ztunnelNetns?: string | undefined;
  backend?: IptablesBackend | undefined;
}

export interface ZtunnelRedirectInput {
  nodeIp?: string | undefined;
  ztunnelIp?: string | undefined;
  iface?: string | undefined;
  tproxyOnIp?: string | undefined;
  backend?: IptablesBackend | undefined;
}

export interface ExecOptions {
  /** Run every command inside this named netns (`ip netns exec`); default: the current one. */
  netns?: string | undefined;
  dryRun?: boolean | undefined;
  runner?: Runner | undefined;
}

type Resolved<T> = { ok: true; value: T } | { ok: false; message: string };

/** `probe` false (dry-run): no GENEVE probe, which would briefly create a link. */
export async function resolveNodeOptions(input: NodeRedirectInput, run: Runner, probe = true): Promise<Resolved<NodeRedirectOptions>> {
  const ztunnelIface = input.ztunnelIface ?? (await findInterfaceTo(run, input.ztunnelIp));
  if (ztunnelIface === undefined) return { ok: false, message: `no route to the ztunnel IP ${input.ztunnelIp}; pass --ztunnel-iface` };
  const podGatewayIp = input.podGatewayIp ?? (await findInterfaceAddress(run, ztunnelIface));
  if (podGatewayIp === undefined) return { ok: false, message: `no IPv4 address on ${ztunnelIface}; pass --pod-gateway-ip` };
  let hostIp = input.hostIp;
  if (hostIp === undefined) {
    const def = await findDefaultRoute(run);
    if (def !== undefined) hostIp = await findInterfaceAddress(run, def.dev);
  }
  let tunnel: NodeTunnelMode;
  if (await linkExists(run, TUNNELS.inbound.nodeName)) {
    tunnel = input.ztunnelNetns !== undefined ? { kind: 'veth', ztunnelNetns: input.ztunnelNetns } : { kind: 'geneve' };
  } else if (input.ztunnelNetns !== undefined && (!probe || !(await kernelHasGeneve(run)))) {
    tunnel = { kind: 'veth', ztunnelNetns: input.ztunnelNetns };
  } else if (!probe || (await kernelHasGeneve(run))) {
    tunnel = { kind: 'geneve' };
  } else {
    return { ok: false, message: 'this kernel has no GENEVE; pass --ztunnel-netns NAME so istioin/istioout can be veth pairs into the ztunnel netns' };
  }
  const backend = input.backend ?? (await detectIptablesBackend(run));
  return { ok: true, value: { ztunnelIp: input.ztunnelIp, ztunnelIface, podGatewayIp, hostIp, backend, tunnel } };
}

export async function resolveZtunnelOptions(input: ZtunnelRedirectInput, run: Runner, probe = true): Promise<Resolved<ZtunnelRedirectOptions>> {
  const def = await findDefaultRoute(run);
  const iface = input.iface ?? def?.dev ?? 'eth0';
  const nodeIp = input.nodeIp ?? def?.via;
  if (nodeIp === undefined) return { ok: false, message: `no default gateway on ${iface}; pass --node-ip` };
  const ztunnelIp = input.ztunnelIp ?? (await findInterfaceAddress(run, iface));
  if (ztunnelIp === undefined) return { ok: false, message: `no IPv4 address on ${iface}; pass --ztunnel-ip` };
  const tunnel = (await linkExists(run, TUNNELS.inbound.ztunnelName)) || !probe || !(await kernelHasGeneve(run)) ? 'veth' : 'geneve';
  const backend = input.backend ?? (await detectIptablesBackend(run));
  return { ok: true, value: { nodeIp, ztunnelIp, iface, backend, tunnel, tproxyOnIp: input.tproxyOnIp ?? DEFAULT_TPROXY_ON_IP } };
}

async function runOrPrint(steps: Step[], run: Runner, dryRun: boolean | undefined, done: string): Promise<RedirectResult> {
  if (dryRun) return { ok: true, text: formatPlan(steps) };
  const outcome = await executePlan(steps, run);
  if (!outcome.ok) return { ok: false, message: describeFailure(outcome) };
  return { ok: true, text: `${done} (${outcome.ran} commands run)\n` };
}

export async function applyNodeRedirect(input: NodeRedirectInput, exec: ExecOptions = {}): Promise<RedirectResult> {
  const run = exec.runner ?? createRunner(exec.netns);
  const opts = await resolveNodeOptions(input, run, !exec.dryRun);
  if (!opts.ok) return opts;
  return runOrPrint(buildNodeApplyPlan(opts.value), run, exec.dryRun, 'node redirection applied');
}

export async function removeNodeRedirect(backend: IptablesBackend | undefined, exec: ExecOptions = {}): Promise<RedirectResult> {
  const run = exec.runner ?? createRunner(exec.netns);
  return runOrPrint(buildNodeRemovePlan(backend ?? (await detectIptablesBackend(run))), run, exec.dryRun, 'node redirection removed');
}

export async function applyZtunnelRedirect(input: ZtunnelRedirectInput, exec: ExecOptions = {}): Promise<RedirectResult> {
  const run = exec.runner ?? createRunner(exec.netns);
  const opts = await resolveZtunnelOptions(input, run, !exec.dryRun);
  if (!opts.ok) return opts;
  return runOrPrint(buildZtunnelApplyPlan(opts.value), run, exec.dryRun, 'ztunnel redirection applied');
}

export async function removeZtunnelRedirect(backend: IptablesBackend | undefined, exec: ExecOptions = {}): Promise<RedirectResult> {
  const run = exec.runner ?? createRunner(exec.netns);
  return runOrPrint(buildZtunnelRemovePlan(backend ?? (await detectIptablesBackend(run))), run, exec.dryRun, 'ztunnel redirection removed');
}
