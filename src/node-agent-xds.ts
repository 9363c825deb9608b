// `ztunnel-ts node-agent --xds`: the node agent with its set of mesh pods taken from the same
// delta xDS stream ztunnel uses (XDS_ADDRESS, XDS_ROOT_CA, AUTH_TOKEN, NODE_NAME from the
// environment) instead of a file. Nothing on the node is touched before the first Address
// response has been applied: an empty mesh at start-up must not empty the ipset.
// Must never: sync from a partial state (a response is applied whole before sync runs).

import { parseArgs } from 'node:util';
import { loadConfig } from './config/env.js';
import { errorMessage } from './errors.js';
import { NodeAgent, defaultAgentLog } from './redirect/node-agent.js';
import type { Runner } from './redirect/plan.js';
import { ADDRESS_TYPE_URL } from './xds/protos.js';
import { XdsMesh } from './xds-mesh.js';

export const XDS_NODE_AGENT_USAGE = `usage: ztunnel-ts node-agent --xds [--node NAME] [--pod-gateway-ip IP] [--netns NS]
Keeps ipset ztunnel-pods-ips and table 100 in step with the HBONE workloads of node NAME
(default NODE_NAME) as istiod pushes them (XDS_ADDRESS, XDS_ROOT_CA, AUTH_TOKEN as for ztunnel).
`;

/** Starts the agent; resolves with a stop function once the first xDS-driven sync ran. */
export async function startXdsNodeAgent(o: {
  env: Record<string, string | undefined>;
  nodeName?: string | undefined;
  podGatewayIp?: string | undefined;
  netns?: string | undefined;
  log?: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** Command runner (tests record the commands instead of running them). */
  runner?: Runner | undefined;
  /** xDS reconnect backoff bounds (tests shorten them). */
  backoffMs?: { initial: number; max: number } | undefined;
}): Promise<{ stop(): Promise<void>; agent: NodeAgent; firstSync: Promise<boolean> }> {
  const log = o.log ?? defaultAgentLog;
  const config = loadConfig({ ...o.env, ...(o.nodeName !== undefined ? { NODE_NAME: o.nodeName } : {}), PROXY_MODE: 'node' });
  if (config.xds === undefined) throw new Error('node-agent --xds: no control plane (XDS_ADDRESS is empty, or a local config is set)');
  const nodeName = config.nodeName as string;
  let agent: NodeAgent | undefined;
  let markFirst: (ok: boolean) => void = () => undefined;
  const firstSync = new Promise<boolean>((resolve) => (markFirst = resolve));
  let addressesSeen = false;
  const mesh: XdsMesh = new XdsMesh({
    config,
    log: (level, message) => log(level, message),
    authzLog: () => undefined,
    onAddresses: () => {
      if (addressesSeen) void agent?.sync();
    },
    onPolicies: () => undefined,
    onFirstResponse: (typeUrl) => {
      if (typeUrl !== ADDRESS_TYPE_URL) return;
      addressesSeen = true;
      log('info', `xds: first workload set from ${config.xds?.address ?? ''} (${mesh.store.size.workloads} workloads)`);
      void agent?.start().then((r) => markFirst(r.ok), () => markFirst(false));
    },
    ...(o.backoffMs ? { initialBackoffMs: o.backoffMs.initial, maxBackoffMs: o.backoffMs.max } : {}),
  });
  agent = new NodeAgent({
    nodeName,
    mesh: () => mesh.store.config,
    sourceName: `xDS ${config.xds.address}`,
    podGatewayIp: o.podGatewayIp,
    netns: o.netns,
    runner: o.runner,
    log,
  });
  mesh.start();
  return {
    agent,
    firstSync,
    stop: async () => {
      mesh.stop();
      await agent?.stop();
    },
  };
}

export async function runXdsNodeAgent(argv: string[]): Promise<number> {
  let values: { node?: string | undefined; 'pod-gateway-ip'?: string | undefined; netns?: string | undefined };
  try {
    values = parseArgs({
      args: argv.filter((a) => a !== '--xds' && a !== 'node-agent'),
      strict: true,
      options: { node: { type: 'string' }, 'pod-gateway-ip': { type: 'string' }, netns: { type: 'string' } },
    }).values;
  } catch (err) {
    process.stderr.write(`node-agent: ${errorMessage(err)}\n${XDS_NODE_AGENT_USAGE}`);
    return 2;
  }
  let running: Awaited<ReturnType<typeof startXdsNodeAgent>>;
  try {
    running = await startXdsNodeAgent({ env: process.env, nodeName: values.node, podGatewayIp: values['pod-gateway-ip'], netns: values.netns });
  } catch (err) {
    process.stderr.write(`node-agent: ${errorMessage(err)}\n`);
    return 1;
  }
  void running.firstSync.then((ok) => defaultAgentLog(ok ? 'info' : 'error', `first sync from xDS done (${ok ? 'ok' : 'failed; see above'})`));
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await running.stop();
  return 0;
}
