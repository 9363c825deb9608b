// Chooses the copy engine for one proxied connection: the kernel (splice, zero-copy) when
// both legs are plain TCP sockets and splicing is on, else the JS pipe loop. Same contract
// either way (copy.ts): half-close, reset propagation, byte counts, one promise.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ByteCounters } from '../record/types.js';
import { type CopyOutcome, type CopySide, copyBidirectional } from './copy.js';
import { spliceBidirectional, startSpliceWorker, stopSpliceWorker } from './splice-copy.js';

export interface RelayOptions {
  splice: boolean;
  /** Abort → reset both sides (the tracker's way to close a spliced connection); required when splicing. */
  signal: AbortSignal | undefined;
}

function isPlainSocket(s: Duplex): s is net.Socket {
  return s instanceof net.Socket && !(s instanceof tls.TLSSocket);
}

/** Could these two legs be spliced (both plain TCP sockets)? */
export function maySplice(a: Duplex, b: Duplex): boolean {
  return isPlainSocket(a) && isPlainSocket(b);
}

/**
 * Splicing destroys the Node sockets at the hand-over, which fires their 'close' listeners
 * (e.g. the open-sockets gauge) too early: hold them until the connection really ends.
 */
function holdCloseListeners(s: net.Socket): () => void {
  const held = s.listeners('close') as ((hadError: boolean) => void)[];
  s.removeAllListeners('close');
  return () => {
    for (const l of held) l.call(s, false);
  };
}

export function relay(down: CopySide, up: CopySide, counters: ByteCounters, o: RelayOptions): Promise<CopyOutcome> {
  const a = down.stream;
  const b = up.stream;
  // Only while some ztunnel holds the worker: a connection finishing its connect after
  // stop() must not start a new worker nobody will stop.
  if (o.splice && o.signal && spliceUsers > 0 && isPlainSocket(a) && isPlainSocket(b)) return spliceHeld(a, b, counters, o.signal);
  // Not async: the JS copy's own promise, without another promise and frame per connection.
  return copyBidirectional(down, up, counters);
}

async function spliceHeld(a: net.Socket, b: net.Socket, counters: ByteCounters, signal: AbortSignal): Promise<CopyOutcome> {
  const release = [holdCloseListeners(a), holdCloseListeners(b)];
  try {
    return await spliceBidirectional(a, b, counters, { signal });
  } finally {
    for (const r of release) r();
  }
}

/**
 * The splice worker is one per process; several ztunnels may share a process (tests).
 * Each acquires it at start and releases it at stop; the last release stops it.
 */
let spliceUsers = 0;

export async function acquireSpliceWorker(): Promise<boolean> {
  spliceUsers += 1;
  return startSpliceWorker();
}

export async function releaseSpliceWorker(): Promise<void> {
  spliceUsers = Math.max(0, spliceUsers - 1);
  if (spliceUsers === 0) await stopSpliceWorker();
}
