// What every connection handler needs, assembled once by app.ts: the frozen Config,
// the current mesh view (swapped whole on reload), certificates, telemetry, and the
// tracker of live connections. Also the answer to "which workloads does this ztunnel
// serve?" (node mode: the workloads of NODE_NAME; dedicated mode: PROXY_WORKLOAD_INFO).
import type { Config, Workload } from '../config/types.js';
import type { PolicyStore } from '../authorize/index.js';
import type { SecretManager } from '../identity/secret-manager.js';
import type { Telemetry } from '../record/telemetry.js';
import type { MeshReader } from '../state/mesh-view.js';
import type { ConnectionTracker } from './connection-tracker.js';

export interface MeshView {
  state: MeshReader;
  policies: PolicyStore;
}

export interface ProxyContext {
  config: Config;
  telemetry: Telemetry;
  secrets: SecretManager;
  tracker: ConnectionTracker;
  view(): MeshView;
  /** 15001, 15006, 15008 (+ the SOCKS5 port): never a destination (loop guard). */
  illegalPorts: ReadonlySet<number>;
  /** Did the inbound listeners get IP_TRANSPARENT? Then the app sees the client's IP. */
  inboundTransparent(): boolean;
  /** Does outbound bind to the client's IP (node mode with IP_TRANSPARENT)? */
  outboundTransparent(): boolean;
}

/** Is this workload one this ztunnel serves? */
export function isLocalWorkload(config: Config, w: Workload): boolean {
  if (config.proxyMode === 'dedicated') {
    const info = config.proxyWorkloadInfo;
    return !!info && w.namespace === info.namespace && w.name === info.name && w.serviceAccount === info.serviceAccount;
  }
  // loadConfig() guarantees NODE_NAME in node mode.
  return w.node === config.nodeName;
}

/** The local workload that owns this IP, if any. */
export function findLocalWorkloadByIp(ctx: ProxyContext, ip: string): Workload | undefined {
  const { state } = ctx.view();
  const w = state.findWorkloadByIp(ctx.config.network, ip);
  if (w && isLocalWorkload(ctx.config, w)) return w;
  if (ctx.config.proxyMode === 'dedicated') {
    // Dedicated mode: the one workload shares the ztunnel's addresses.
    return findDedicatedWorkload(ctx);
  }
  return undefined;
}

export function findDedicatedWorkload(ctx: ProxyContext): Workload | undefined {
  const { state } = ctx.view();
  for (const w of state.config.workloads) if (isLocalWorkload(ctx.config, w)) return w;
  return undefined;
}
