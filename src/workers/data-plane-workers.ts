// The main thread's side of the data-path worker threads (ZTUNNEL_WORKER_THREADS ≥ 2): starts
// them, keeps their mesh current (every message in the order the main thread applied it),
// answers their certificate requests from the main thread's SecretManager and pushes every
// certificate it issues, passes log-level changes on, writes their log text to the main
// thread's destination, and gathers what they hold for /config_dump and /metrics (prom-client's
// AggregatorRegistry sums the registries: counters and gauges add up, istio_build is taken once).
// Listening: the first worker binds the configured ports with SO_REUSEPORT, the others join the
// ports it got (so port 0 in tests works), and the kernel spreads connections across the group.
// A worker that dies is logged as an unexpected error; the others keep serving (its listeners
// left the SO_REUSEPORT group with it) while a new thread is started in its place: it gets the
// mesh as it is now (a whole local config, or the MeshStore's snapshot as deltas) before any
// later change, and joins the same ports. At most RESTART_LIMIT restarts per minute.
// Must never: let a dead worker take the process down, or wait forever on a worker (every call
// has a timeout).
import { Worker } from 'node:worker_threads';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Config, LocalConfig } from '../config/types.js';
import type { DataPlaneDump, DataPlanePorts } from '../data-plane.js';
import { type ErrorCode, ZtError, errorMessage } from '../errors.js';
import type { IssuedIdentity } from '../identity/cert-source.js';
import type { SecretManager } from '../identity/secret-manager.js';
import type { Telemetry } from '../record/telemetry.js';
import type { MeshDelta } from '../state/mesh-store.js';
import type { FromWorker, MainCallOp, ToWorker, WireError, WorkerInit } from './protocol.js';

type MetricJson = MetricObjectWithValues<MetricValue<string>>;

/** How long a call may take beyond its own work (a stuck worker must not hang admin or shutdown). */
const CALL_TIMEOUT_MS = 10_000;
/** The first call also waits for the thread to load its modules (~1 s built; far longer from TypeScript sources). */
const LISTEN_TIMEOUT_MS = 60_000;

/** Restarts allowed within RESTART_WINDOW_MS; beyond that a dying worker stays down (logged). */
const RESTART_LIMIT = 5;
const RESTART_WINDOW_MS = 60_000;

/** The mesh as it is now, for a restarted worker. */
export type MeshSnapshot = { local: LocalConfig } | { deltas: MeshDelta[] };

export interface DataPlaneWorkersOptions {
  /** The mesh as the main thread holds it now (a restarted worker starts from it). */
  meshSnapshot: () => MeshSnapshot;
  config: Config;
  count: number;
  mesh: 'local' | 'xds';
  telemetry: Telemetry;
  secrets: SecretManager;
  byteFlushIntervalMs: number | undefined;
  version: string;
}

/** One worker as config_dump shows it. */
export interface WorkerDump extends DataPlaneDump {
  worker: number;
  threadId: number;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

class WorkerHandle {
  readonly index: number;
  readonly worker: Worker;
  exited = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(index: number, worker: Worker) {
    this.index = index;
    this.worker = worker;
  }

  post(m: ToWorker): void {
    if (!this.exited) this.worker.postMessage(m);
  }

  call(call: MainCallOp, timeoutMs = CALL_TIMEOUT_MS): Promise<unknown> {
    if (this.exited) return Promise.reject(new Error(`data-path worker ${this.index} has exited`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`data-path worker ${this.index} did not answer '${call.op}' within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer });
      this.worker.postMessage({ t: 'call', id, call } satisfies ToWorker);
    });
  }

  settle(id: number, value: unknown, error: WireError | undefined): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (error) p.reject(fromWire(error));
    else p.resolve(value);
  }

  failAll(why: string): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(why));
    }
    this.pending.clear();
  }
}

function fromWire(e: WireError): Error {
  return e.code ? new ZtError(e.code as ErrorCode, e.message) : new Error(e.message);
}

function workerUrl(): URL {
  // Run from source (tests, ts loader) the sibling is .ts; built, it is .js.
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./worker-thread${ext}`, import.meta.url);
}

export class DataPlaneWorkers {
  private readonly o: DataPlaneWorkersOptions;
  private readonly workers: WorkerHandle[] = [];
  private stopping = false;
  /** The ports of the group, once the first worker bound them. */
  private groupPorts: { outbound: number; inboundPlaintext: number; inbound: number; socks5: number | undefined } | undefined;
  private readonly restarts: number[] = [];

  /** Starts the threads now; messages sent before they run are queued in order. */
  constructor(o: DataPlaneWorkersOptions) {
    this.o = o;
    for (let i = 0; i < o.count; i++) this.workers.push(this.spawn(i));
  }

  get count(): number {
    return this.workers.length;
  }

  private spawn(index: number): WorkerHandle {
    const init: WorkerInit = {
      config: this.o.config,
      index,
      mesh: this.o.mesh,
      logLevel: this.o.telemetry.getLogLevel(),
      byteFlushIntervalMs: this.o.byteFlushIntervalMs,
      version: this.o.version,
    };
    const worker = new Worker(workerUrl(), { workerData: init, stdout: false, stderr: false });
    const h = new WorkerHandle(index, worker);
    worker.on('message', (m: FromWorker) => this.onMessage(h, m));
    worker.on('error', (err) => {
      this.o.telemetry.unexpected('uncaughtException', `worker ${index}`, err);
    });
    worker.on('exit', (code) => {
      h.exited = true;
      h.failAll(`data-path worker ${index} exited (code ${code})`);
      if (this.stopping || this.workers[index] !== h) return;
      const alive = this.workers.filter((w) => !w.exited).length;
      this.o.telemetry.unexpected(
        'uncaughtException',
        'workers',
        new Error(`data-path worker ${index} exited with code ${code}; ${alive} of ${this.workers.length} keep serving`),
      );
      this.restart(index);
    });
    return h;
  }

  /** A new thread in place of a dead one: the mesh as it is now, then the group's ports. */
  private restart(index: number): void {
    const now = Date.now();
    while (this.restarts.length > 0 && now - this.restarts[0]! > RESTART_WINDOW_MS) this.restarts.shift();
    if (this.restarts.length >= RESTART_LIMIT) {
      this.o.telemetry.log.error({ scope: 'workers', worker: index }, `data-path worker not restarted: ${RESTART_LIMIT} restarts within a minute`);
      return;
    }
    this.restarts.push(now);
    const h = this.spawn(index);
    this.workers[index] = h;
    const snapshot = this.o.meshSnapshot();
    if ('local' in snapshot) h.post({ t: 'mesh-local', local: snapshot.local, reload: false });
    else for (const delta of snapshot.deltas) h.post({ t: 'mesh-delta', delta });
    const ports = this.groupPorts;
    if (ports === undefined) return; // not listening yet: listen() will bind it
    h.call({ op: 'listen', options: { reusePort: true, socks5: index === 0, ports } }, LISTEN_TIMEOUT_MS).then(
      () => this.o.telemetry.log.info({ scope: 'workers', worker: index, threadId: h.worker.threadId }, 'data-path worker restarted'),
      (err: unknown) => this.o.telemetry.unexpected('uncaughtException', 'workers', err),
    );
  }

  private onMessage(h: WorkerHandle, m: FromWorker): void {
    switch (m.t) {
      case 'log':
        this.o.telemetry.writeRaw(m.text);
        return;
      case 'reply':
        h.settle(m.id, m.value, m.error);
        return;
      case 'cert-fetch':
        this.o.secrets.fetch(m.identity).then(
          () => {
            const issued = this.o.secrets.current(m.identity);
            h.post(issued ? { t: 'cert-reply', id: m.id, issued } : { t: 'cert-reply', id: m.id, error: { code: 'ZT_ERR_IDENTITY_UNAVAILABLE', message: `no certificate for ${m.identity}` } });
          },
          (err: unknown) => h.post({ t: 'cert-reply', id: m.id, error: { code: 'ZT_ERR_IDENTITY_UNAVAILABLE', message: errorMessage(err) } }),
        );
        return;
    }
  }

  private broadcast(m: ToWorker): void {
    for (const w of this.workers) w.post(m);
  }

  meshLocal(local: LocalConfig, reload: boolean): void {
    this.broadcast({ t: 'mesh-local', local, reload });
  }

  meshDelta(delta: MeshDelta): void {
    this.broadcast({ t: 'mesh-delta', delta });
  }

  certificateIssued(issued: IssuedIdentity): void {
    this.broadcast({ t: 'cert', issued });
  }

  logLevel(level: string): void {
    this.broadcast({ t: 'log-level', level });
  }

  /** The first worker binds; the others join its ports (SO_REUSEPORT). */
  async listen(): Promise<DataPlanePorts> {
    const [first, ...rest] = this.workers;
    if (!first) throw new Error('no data-path workers');
    const ports = (await first.call({ op: 'listen', options: { reusePort: true, socks5: true } }, LISTEN_TIMEOUT_MS)) as DataPlanePorts;
    const fixed = { outbound: ports.outbound, inboundPlaintext: ports.inboundPlaintext, inbound: ports.inbound };
    this.groupPorts = { ...fixed, socks5: ports.socks5 };
    const others = (await Promise.all(rest.map((w) => w.call({ op: 'listen', options: { reusePort: true, socks5: false, ports: fixed } }, LISTEN_TIMEOUT_MS)))) as DataPlanePorts[];
    // Transparent only if every thread's listeners are.
    return { ...ports, inboundTransparent: others.every((p) => p.inboundTransparent) && ports.inboundTransparent };
  }

  /** Each live worker's part of /config_dump. */
  async dump(): Promise<WorkerDump[]> {
    const live = this.workers.filter((w) => !w.exited);
    const dumps = await Promise.all(live.map((w) => w.call({ op: 'dump' }) as Promise<DataPlaneDump>));
    return dumps.map((d, i) => ({ worker: live[i]!.index, threadId: live[i]!.worker.threadId, ...d }));
  }

  /** The main registry and every worker's, summed, as Prometheus text. */
  async metrics(main: MetricJson[]): Promise<string> {
    const live = this.workers.filter((w) => !w.exited);
    const theirs = (await Promise.all(live.map((w) => w.call({ op: 'metrics' })))) as MetricJson[][];
    return AggregatorRegistry.aggregate([main, ...theirs]).metrics();
  }

  /** Every worker drains (stop accepting, GOAWAY, wait up to the deadline, reset the rest). */
  async drain(deadlineMs: number): Promise<void> {
    await Promise.allSettled(this.workers.map((w) => w.call({ op: 'drain', deadlineMs }, deadlineMs + CALL_TIMEOUT_MS)));
  }

  /** Stop every worker now and end the threads. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled(this.workers.map((w) => w.call({ op: 'stop' }, 3000)));
    await Promise.allSettled(this.workers.map((w) => w.worker.terminate()));
  }
}
