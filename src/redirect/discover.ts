// Read-only look-ups of the netns we are about to program: which interface leads to an
// address, the IPv4 address of an interface, the default gateway, whether the kernel has
// GENEVE. Results are values (undefined when not found); nothing here changes the host
// except the GENEVE probe, which deletes the link it created at once.

import type { Runner } from './plan.js';

/** `dev X` of `ip -o -4 route get <ip>`. */
export async function findInterfaceTo(run: Runner, ip: string): Promise<string | undefined> {
  const r = await run({ file: 'ip', args: ['-o', '-4', 'route', 'get', ip] });
  if (r.code !== 0) return undefined;
  return /\bdev (\S+)/.exec(r.stdout)?.[1];
}

export async function findInterfaceAddress(run: Runner, iface: string): Promise<string | undefined> {
  const r = await run({ file: 'ip', args: ['-o', '-4', 'addr', 'show', 'dev', iface, 'scope', 'global'] });
  if (r.code !== 0) return undefined;
  return /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout)?.[1];
}

export async function findDefaultRoute(run: Runner): Promise<{ via: string | undefined; dev: string } | undefined> {
  const r = await run({ file: 'ip', args: ['-o', '-4', 'route', 'show', 'default'] });
  if (r.code !== 0) return undefined;
  const dev = /\bdev (\S+)/.exec(r.stdout)?.[1];
  if (dev === undefined) return undefined;
  return { via: /\bvia (\S+)/.exec(r.stdout)?.[1], dev };
}

export async function linkExists(run: Runner, name: string): Promise<boolean> {
  return (await run({ file: 'ip', args: ['link', 'show', 'dev', name] })).code === 0;
}

/** Probes `ip link add … type geneve`; this kernel kind has none, so callers fall back to veth. */
export async function kernelHasGeneve(run: Runner): Promise<boolean> {
  const probe = `ztgeneveprobe${process.pid % 100}`;
  const r = await run({ file: 'ip', args: ['link', 'add', probe, 'type', 'geneve', 'id', '4242', 'remote', '127.0.0.2'] });
  if (r.code !== 0) return false;
  await run({ file: 'ip', args: ['link', 'del', probe] });
  return true;
}
