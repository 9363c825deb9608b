// Resource figures of a process and of a ztunnel, read from outside: open fds and RSS from
// /proc/PID, HBONE session sockets from `ss` in the ztunnel's netns, and a gauge summed
// over its labels from the Prometheus text on :15020. Used by the root scale suite.
import { readdirSync, readFileSync } from 'node:fs';
import type { Topology } from '../../src/demo/topology.js';

export function countOpenFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size in bytes (VmRSS). */
export function readRssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Sum of every sample of metric `name` (all label sets) in Prometheus text. */
export function sumMetric(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

export async function scrapeMetrics(topo: Topology, netns: string): Promise<string> {
  return (await topo.execIn(netns, 'curl', ['-s', '--max-time', '5', 'http://127.0.0.1:15020/metrics'])).stdout;
}

/** Established TCP connections in `netns` with local or remote port `port` (e.g. HBONE 15008). */
export async function countEstablished(topo: Topology, netns: string, filter: 'sport' | 'dport', port: number): Promise<number> {
  const r = await topo.execIn(netns, 'ss', ['-Htn', 'state', 'established', `( ${filter} = :${port} )`]);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

export const MiB = 1024 * 1024;
export const fmtMiB = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;
