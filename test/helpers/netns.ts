// Throwaway network namespaces for root-only tests: create namespaces under one unique
// prefix, join them with veth pairs, run commands inside, and remove everything again.
// Deleting a netns removes its links, routes, rules and iptables state, so cleanup only has
// to kill the processes it started and delete the namespaces.
// Must never: touch a namespace outside its own prefix, or leave one behind (cleanup runs
// from t.teardown, on process exit, and on SIGINT/SIGTERM/SIGHUP).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface VethEnd {
  ns: string;
  /** Interface name inside `ns` (max 15 characters). */
  name: string;
  /** CIDR, e.g. '10.77.1.1/24'; IPv6 addresses are added with nodad. */
  addresses: string[];
}

const NETNS_DIR = '/var/run/netns';
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** Whether root-only netns tests can run here; otherwise the reason to skip with. */
export function findNetnsSkipReason(tools: string[] = ['ip']): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, iptables)';
  for (const tool of tools) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    if (r.status !== 0) return `'${tool}' is not installed`;
  }
  return undefined;
}

function runIp(args: string[]): ExecResult {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

export class NetnsSandbox {
  readonly prefix: string;
  private readonly namespaces = new Set<string>();
  private readonly children = new Set<ChildProcess>();
  private cleaned = false;
  private readonly onExit: () => void;
  private readonly onSignal: (signal: NodeJS.Signals) => void;

  /** prefix: unique per test file and process, e.g. `zt-tp-${process.pid}-`. */
  constructor(prefix: string) {
    this.prefix = prefix;
    this.onExit = () => this.cleanup();
    this.onSignal = (signal) => {
      this.cleanup();
      process.kill(process.pid, signal);
    };
    process.on('exit', this.onExit);
    for (const s of SIGNALS) process.once(s, this.onSignal);
  }

  /** Creates `<prefix><name>` with lo up; returns the full namespace name. */
  add(name: string): string {
    const ns = `${this.prefix}${name}`;
    const r = runIp(['netns', 'add', ns]);
    if (r.code !== 0) throw new Error(`ip netns add ${ns} failed: ${r.stderr.trim()}`);
    this.namespaces.add(ns);
    this.run(ns, ['ip', 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** The path setns()/withNetns() takes for a namespace. */
  path(ns: string): string {
    return `${NETNS_DIR}/${ns}`;
  }

  /** A veth pair with one end in each namespace, addressed and up. */
  addVeth(a: VethEnd, b: VethEnd): void {
    this.run(a.ns, ['ip', 'link', 'add', a.name, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns]);
    for (const end of [a, b]) {
      for (const cidr of end.addresses) {
        const v6 = cidr.includes(':');
        this.run(end.ns, ['ip', ...(v6 ? ['-6'] : []), 'addr', 'add', cidr, 'dev', end.name, ...(v6 ? ['nodad'] : [])]);
      }
      this.run(end.ns, ['ip', 'link', 'set', end.name, 'up']);
    }
  }

  /** Runs argv inside ns and waits; throws with its stderr on a non-zero exit. */
  run(ns: string, argv: string[]): string {
    const r = runIp(['netns', 'exec', ns, ...argv]);
    if (r.code !== 0) throw new Error(`[${ns}] ${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Runs argv inside ns asynchronously (stdin from `input`); never rejects on exit code. */
  exec(ns: string, argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    const child = this.spawn(ns, argv);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 10_000);
    child.stdin?.end(opts.input ?? '');
    return new Promise((resolve) => {
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ code: null, stdout, stderr: stderr + String(err) });
      });
    });
  }

  /** A long-running process inside ns, killed by cleanup() if still alive. */
  spawn(ns: string, argv: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: 'pipe' });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Kills started processes and deletes every namespace made here. Idempotent, synchronous. */
  cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const child of this.children) child.kill('SIGKILL');
    this.children.clear();
    for (const ns of this.namespaces) {
      // Anything still running inside (e.g. a grandchild of `ip netns exec`) would keep the
      // namespace alive after the mount is gone.
      runIp(['netns', 'pids', ns]).stdout
        .split('\n')
        .filter((pid) => /^\d+$/.test(pid) && Number(pid) !== process.pid)
        .forEach((pid) => {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            // already gone
          }
        });
      runIp(['netns', 'del', ns]);
    }
    this.namespaces.clear();
    process.removeListener('exit', this.onExit);
    for (const s of SIGNALS) process.removeListener(s, this.onSignal);
  }

  /** Deletes leftover namespaces whose name starts with prefix (e.g. from a killed run). */
  static sweep(prefix: string): string[] {
    const names = runIp(['netns', 'list']).stdout
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '')
      .filter((name) => name !== '' && name.startsWith(prefix));
    for (const ns of names) runIp(['netns', 'del', ns]);
    return names;
  }
}
