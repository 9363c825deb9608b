// The record layer's front door: one Telemetry per ztunnel owns its metrics registry,
// its logs and the set of open connection records. The proxy handlers call open() once
// the context is known and complete() at the connection's single edge.
// Must never do work per chunk: the copy loop only adds to `record.bytes`; one unref'd
// interval timer moves the byte deltas of all open records into the counters, so long
// connections show up while still open (user need #8).
// Metric labels are a snapshot taken at open(); fields filled into ctx later reach the
// access log (built at complete()) but not the metric series, which stay stable.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { errorMessage, responseFlagOf, type ResponseFlag } from '../errors.js';
import { buildCompleteFields, buildContextFields, buildEarlyDenyFields } from './access-log.js';
import { getLogLevel, type LogLevelName } from './log-format.js';
import { LogSink } from './log-sink.js';
import { IstioMetrics, buildClosedLabels, buildTrafficLabels, type TrafficLabels, type UnexpectedKind } from './metrics.js';
import type { ByteCounters, ConnectionContext } from './types.js';

export interface TelemetryOptions {
  logFormat: 'plain' | 'json';
  /** error|warn|info|debug|trace|off */
  logLevel: string;
  accessLogOnlyFailed: boolean;
  clusterId: string;
  version?: string;
  /** where log lines go; default: an async (non-blocking) pino destination on stdout (fd 1). Tests pass a writable that collects lines. */
  destination?: NodeJS.WritableStream;
  /** default 5000: open connections' byte deltas are added to the counters this often */
  byteFlushIntervalMs?: number;
  /**
   * Default true: the registry also has prom-client's process metrics (CPU, memory, fds, event
   * loop). A data-path worker thread's Telemetry leaves them out: they are the process's, and
   * the main thread reports them once.
   */
  processMetrics?: boolean;
}

const DEFAULT_BYTE_FLUSH_INTERVAL_MS = 5000;

export class Telemetry {
  readonly registry: Registry;
  readonly log: Logger;
  readonly metrics: IstioMetrics;
  private readonly sink: LogSink;
  private readonly onlyFailed: boolean;
  private readonly clusterId: string;
  private readonly initialLevel: LogLevelName;
  private readonly openRecords = new Set<ConnectionRecord>();
  private readonly reporterLabels = {
    source: { reporter: 'source' },
    destination: { reporter: 'destination' },
  } as const;
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly levelListeners: ((level: string) => void)[] = [];

  constructor(opts: TelemetryOptions) {
    this.initialLevel = getLogLevel(opts.logLevel);
    this.sink = new LogSink(opts.logFormat, this.initialLevel, opts.destination);
    this.log = this.sink.log;
    this.metrics = new IstioMetrics(opts.version, { processMetrics: opts.processMetrics ?? true });
    this.registry = this.metrics.registry;
    this.onlyFailed = opts.accessLogOnlyFailed;
    this.clusterId = opts.clusterId;
    const interval = opts.byteFlushIntervalMs ?? DEFAULT_BYTE_FLUSH_INTERVAL_MS;
    this.flushTimer = setInterval(() => this.flushBytes(), interval);
    this.flushTimer.unref();
  }

  /** Throws ZtError('ZT_ERR_CONFIG_INVALID') on a bad level. */
  setLogLevel(level: string): void {
    this.sink.setLevel(level);
    for (const l of this.levelListeners) l(this.sink.getLevel());
  }

  /** Called after every level change (the main thread passes it on to the worker threads). */
  onLogLevel(listener: (level: string) => void): void {
    this.levelListeners.push(listener);
  }

  /** Log text a worker thread formatted, written to this Telemetry's destination as is. */
  writeRaw(text: string): void {
    this.sink.writeRaw(text);
  }

  getLogLevel(): string {
    return this.sink.getLevel();
  }

  /** The level given at construction (admin `/logging?reset`). */
  getInitialLogLevel(): string {
    return this.initialLevel;
  }

  /**
   * `sharedBytes`: count into another record's counters (a same-node hand-over: the
   * outbound and the inbound record of one connection see the same bytes, each flushing
   * its own deltas every interval).
   */
  open(ctx: ConnectionContext, sharedBytes?: ByteCounters): ConnectionRecord {
    const labels = buildTrafficLabels(ctx, this.clusterId);
    const record = new ConnectionRecord(this, ctx, labels, sharedBytes);
    this.metrics.connectionsOpened.inc(labels);
    this.openRecords.add(record);
    if (!this.onlyFailed && this.sink.enabled('debug')) {
      this.sink.access('debug', 'connection opened', buildContextFields(ctx, this.clusterId));
    }
    return record;
  }

  earlyDeny(
    direction: 'outbound' | 'inbound',
    srcAddr: string,
    dstAddr: string,
    error: string,
    fields?: Record<string, string>,
  ): void {
    if (!this.sink.enabled('warn')) return;
    this.sink.access('warn', 'connection failed', buildEarlyDenyFields(direction, srcAddr, dstAddr, error, fields));
  }

  /**
   * A bug, not an outcome: counted in ztunnel_ts_unexpected_errors_total and logged once
   * at error level with the stack. Every such line starts with "unexpected error" (the
   * test suites fail on it).
   */
  unexpected(kind: UnexpectedKind, scope: string, err: unknown): void {
    this.metrics.unexpectedErrors.inc({ kind });
    this.log.error({ scope, kind, error: errorMessage(err), stack: (err as Error | undefined)?.stack }, `unexpected error (${kind})`);
  }

  socketOpened(reporter: 'source' | 'destination'): void {
    this.metrics.socketsOpen.inc(this.reporterLabels[reporter]);
  }

  socketClosed(reporter: 'source' | 'destination'): void {
    this.metrics.socketsOpen.dec(this.reporterLabels[reporter]);
  }

  openConnections(): number {
    return this.openRecords.size;
  }

  /** Moves every open record's byte delta into the counters. Also runs on the timer. */
  flushBytes(): void {
    for (const record of this.openRecords) this.flushRecord(record);
  }

  async close(): Promise<void> {
    if (this.flushTimer !== undefined) {
      clearInterval(this.flushTimer);
      this.flushTimer = undefined;
    }
    this.flushBytes();
    await this.sink.flush();
  }

  /** @internal the record's edge; see ConnectionRecord.complete. */
  completeRecord(record: ConnectionRecord, error: unknown, flag: ResponseFlag, extra: Record<string, string> | undefined): void {
    this.openRecords.delete(record);
    this.flushRecord(record);
    const closedLabels = buildClosedLabels(record.labels, flag);
    this.metrics.connectionsClosed.inc(closedLabels);
    if (flag !== '-') this.metrics.connectionsFailed.inc(closedLabels);

    const failed = error !== undefined && error !== null;
    if (failed ? !this.sink.enabled('error') : this.onlyFailed || !this.sink.enabled('info')) return;
    const fields = buildCompleteFields(record.ctx, record.bytes, Date.now() - record.startedAt, this.clusterId);
    if (extra !== undefined) Object.assign(fields, extra);
    if (failed) {
      fields['error'] = errorMessage(error);
      this.sink.access('error', 'connection complete', fields);
    } else {
      this.sink.access('info', 'connection complete', fields);
    }
  }

  private flushRecord(record: ConnectionRecord): void {
    const bytes = record.bytes;
    const up = bytes.clientToServer - record.flushedClientToServer;
    const down = bytes.serverToClient - record.flushedServerToClient;
    if (up > 0) {
      this.metrics.receivedBytes.inc(record.labels, up);
      record.flushedClientToServer = bytes.clientToServer;
    }
    if (down > 0) {
      this.metrics.sentBytes.inc(record.labels, down);
      record.flushedServerToClient = bytes.serverToClient;
    }
  }
}

export class ConnectionRecord {
  readonly ctx: ConnectionContext;
  readonly bytes: ByteCounters;
  readonly startedAt: number;
  /** @internal traffic labels snapshot (response_flags '-'), built once at open(). */
  readonly labels: TrafficLabels;
  /** @internal how much of `bytes` the counters already hold. */
  flushedClientToServer: number;
  flushedServerToClient: number;
  private readonly owner: Telemetry;
  private done: boolean;
  private extra: Record<string, string> | undefined;

  constructor(owner: Telemetry, ctx: ConnectionContext, labels: TrafficLabels, sharedBytes?: ByteCounters) {
    this.ctx = ctx;
    this.bytes = sharedBytes ?? { clientToServer: 0, serverToClient: 0 };
    this.startedAt = Date.now();
    this.labels = labels;
    this.flushedClientToServer = 0;
    this.flushedServerToClient = 0;
    this.owner = owner;
    this.done = false;
  }

  get completed(): boolean {
    return this.done;
  }

  /** Fields for the access-log line written at complete() (e.g. the denying policy). */
  setExtraFields(fields: Record<string, string>): void {
    this.extra = this.extra ? { ...this.extra, ...fields } : fields;
  }

  /**
   * Idempotent. Flushes remaining byte deltas, istio_tcp_connections_closed_total
   * (+ istio_tcp_connections_failed_total when the flag is a failure), and the access log
   * line 'connection complete' (info; error level with an `error` field when error is set).
   * responseFlag from responseFlagOf(error) unless given. extraFields are added to the log
   * line (e.g. {'policy': 'default/deny-x'}).
   */
  complete(error?: unknown, opts?: { responseFlag?: ResponseFlag; extraFields?: Record<string, string> }): void {
    if (this.done) return;
    this.done = true;
    const flag = opts?.responseFlag ?? (error === undefined || error === null ? '-' : responseFlagOf(error));
    const extra = this.extra && opts?.extraFields ? { ...this.extra, ...opts.extraFields } : (opts?.extraFields ?? this.extra);
    this.owner.completeRecord(this, error, flag, extra);
  }
}
