// Command-line entries for the kernel side of capture, wired into main.ts by the lead:
//   redirect node    [--ztunnel-ip IP] [--pod-gateway-ip IP] [--ztunnel-iface IF] [--host-ip IP]
//                    [--ztunnel-netns NS] [--netns NS] [--backend nft|legacy] [--remove] [--dry-run]
//   redirect ztunnel [--node-ip IP] [--ztunnel-ip IP] [--iface IF] [--tproxy-on-ip IP]
//                    [--netns NS] [--backend nft|legacy] [--remove] [--dry-run]
//   node-agent --config FILE --node NAME [--pod-gateway-ip IP] [--netns NS]
// Exit 0 on success, 2 on usage errors, 1 when the kernel refused something.
// Must never: print a stack trace for an expected failure; messages say what to do.

import { parseArgs } from 'node:util';
import type { IptablesBackend } from './iptables.js';
import { NodeAgent } from './node-agent.js';
import { applyNodeRedirect, applyZtunnelRedirect, removeNodeRedirect, removeZtunnelRedirect, type RedirectResult } from './redirect.js';

export const REDIRECT_USAGE = `usage:
  ztunnel-ts redirect node --ztunnel-ip IP [--pod-gateway-ip IP] [--ztunnel-iface IF] [--host-ip IP]
                           [--ztunnel-netns NS] [--netns NS] [--backend nft|legacy] [--remove] [--dry-run]
  ztunnel-ts redirect ztunnel [--node-ip IP] [--ztunnel-ip IP] [--iface IF] [--tproxy-on-ip IP]
                           [--netns NS] [--backend nft|legacy] [--remove] [--dry-run]
Run in the node's (resp. the ztunnel pod's) network namespace, or pass --netns NAME.
--ztunnel-netns is needed on kernels without GENEVE: istioin/istioout become veth pairs
whose pistioin/pistioout ends are moved into that netns. Apply the node side first.
`;

export const NODE_AGENT_USAGE = `usage: ztunnel-ts node-agent --config FILE --node NAME [--pod-gateway-ip IP] [--netns NS]
Keeps ipset ${'ztunnel-pods-ips'} and table 100 in step with FILE's HBONE workloads on node NAME.
`;

const errOut = (s: string): void => void process.stderr.write(s);
const out = (s: string): void => void process.stdout.write(s);

function parseBackend(v: string | undefined): IptablesBackend | undefined | 'bad' {
  if (v === undefined) return undefined;
  return v === 'nft' || v === 'legacy' ? v : 'bad';
}

function finish(r: RedirectResult): number {
  if (r.ok) {
    out(r.text);
    return 0;
  }
  errOut(`redirect: ${r.message}\n`);
  return 1;
}

export async function runRedirectCli(argv: string[]): Promise<number> {
  const args = argv[0] === 'redirect' ? argv.slice(1) : argv;
  const side = args[0];
  if (side === undefined || side === '--help' || side === '-h') {
    (side === undefined ? errOut : out)(REDIRECT_USAGE);
    return side === undefined ? 2 : 0;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: args.slice(1),
      strict: true,
      options: {
        'ztunnel-ip': { type: 'string' },
        'pod-gateway-ip': { type: 'string' },
        'ztunnel-iface': { type: 'string' },
        'host-ip': { type: 'string' },
        'ztunnel-netns': { type: 'string' },
        'node-ip': { type: 'string' },
        iface: { type: 'string' },
        'tproxy-on-ip': { type: 'string' },
        netns: { type: 'string' },
        backend: { type: 'string' },
        remove: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
      },
    }).values;
  } catch (err) {
    errOut(`redirect: ${(err as Error).message}\n${REDIRECT_USAGE}`);
    return 2;
  }
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const backend = parseBackend(str('backend'));
  if (backend === 'bad') {
    errOut(`redirect: --backend must be nft or legacy\n`);
    return 2;
  }
  const exec = { netns: str('netns'), dryRun: values['dry-run'] === true };
  if (side === 'node') {
    if (values.remove === true) return finish(await removeNodeRedirect(backend, exec));
    const ztunnelIp = str('ztunnel-ip');
    if (ztunnelIp === undefined) {
      errOut(`redirect node: --ztunnel-ip is required\n${REDIRECT_USAGE}`);
      return 2;
    }
    return finish(
      await applyNodeRedirect(
        {
          ztunnelIp,
          podGatewayIp: str('pod-gateway-ip'),
          ztunnelIface: str('ztunnel-iface'),
          hostIp: str('host-ip'),
          ztunnelNetns: str('ztunnel-netns'),
          backend,
        },
        exec,
      ),
    );
  }
  if (side === 'ztunnel') {
    if (values.remove === true) return finish(await removeZtunnelRedirect(backend, exec));
    return finish(
      await applyZtunnelRedirect(
        { nodeIp: str('node-ip'), ztunnelIp: str('ztunnel-ip'), iface: str('iface'), tproxyOnIp: str('tproxy-on-ip'), backend },
        exec,
      ),
    );
  }
  errOut(`redirect: unknown side '${side}' (node or ztunnel)\n${REDIRECT_USAGE}`);
  return 2;
}

/** Runs until SIGINT/SIGTERM; resolves with the exit code. */
export async function runNodeAgentCli(argv: string[]): Promise<number> {
  const args = argv[0] === 'node-agent' ? argv.slice(1) : argv;
  let values: { config?: string; node?: string; 'pod-gateway-ip'?: string; netns?: string; help?: boolean };
  try {
    values = parseArgs({
      args,
      strict: true,
      options: {
        config: { type: 'string' },
        node: { type: 'string' },
        'pod-gateway-ip': { type: 'string' },
        netns: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    errOut(`node-agent: ${(err as Error).message}\n${NODE_AGENT_USAGE}`);
    return 2;
  }
  if (values.help) {
    out(NODE_AGENT_USAGE);
    return 0;
  }
  const nodeName = values.node ?? process.env.NODE_NAME;
  if (values.config === undefined || nodeName === undefined) {
    errOut(`node-agent: --config and --node (or NODE_NAME) are required\n${NODE_AGENT_USAGE}`);
    return 2;
  }
  const agent = new NodeAgent({ nodeName, configPath: values.config, podGatewayIp: values['pod-gateway-ip'], netns: values.netns });
  const first = await agent.start();
  if (!first.ok) {
    await agent.stop();
    errOut('node-agent: the first sync failed (see the log above)\n');
    return 1;
  }
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void agent.stop().then(() => resolve(0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
