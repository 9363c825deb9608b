// Real loopback socket pairs for testing a relay engine (copy loop or splice worker):
// client ⇄ down [relay] up ⇄ app, each pair connected through a throwaway server.
import net from 'node:net';
import type { ByteCounters } from '../../src/record/types.js';

/** A connected pair: [the end the test holds, the end the relay holds]. */
export async function socketPair(): Promise<[net.Socket, net.Socket, () => void]> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const outer = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const inner = await accepted;
  await new Promise<void>((r) => (outer.connecting ? outer.once('connect', () => r()) : r()));
  inner.on('error', () => undefined);
  return [outer, inner, () => server.close()];
}

export type RelayStart = (
  down: net.Socket,
  up: net.Socket,
  counters: ByteCounters,
  signal?: AbortSignal,
) => Promise<{ error: Error | undefined }>;

export interface Proxied {
  client: net.Socket;
  app: net.Socket;
  down: net.Socket;
  up: net.Socket;
  counters: ByteCounters;
  /** Starts the relay between down and up. */
  start: (signal?: AbortSignal) => Promise<{ error: Error | undefined }>;
}

/** client ⇄ down [relay] up ⇄ app; everything closed at teardown. */
export async function buildProxied(t: { teardown(fn: () => void): void }, relay: RelayStart): Promise<Proxied> {
  const [client, down, c1] = await socketPair();
  const [app, up, c2] = await socketPair();
  t.teardown(() => {
    c1();
    c2();
    client.destroy();
    app.destroy();
  });
  const counters = { clientToServer: 0, serverToClient: 0 };
  return { client, app, down, up, counters, start: (signal) => relay(down, up, counters, signal) };
}

/** Everything read until EOF, as text. */
export function collect(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let acc = '';
    s.on('data', (d: Buffer) => (acc += d.toString()));
    s.once('end', () => resolve(acc));
  });
}
