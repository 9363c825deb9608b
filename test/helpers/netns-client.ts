// TCP clients opened by the test process itself from inside a pod's network namespace:
// the socket is created in that netns (native-shims withNetns), so its traffic takes the
// pod's routes and the node's capture path, while the test keeps every socket in one
// event loop (no child process per connection). Used by the root fault and scale suites.
import { closeSync } from 'node:fs';
import net from 'node:net';
import { createMarkedSocketFd, withNetns } from '../../native-shims/index.js';

/**
 * `n` fresh, unconnected IPv4 TCP socket fds created inside netns `name` (one setns for all).
 * They are plain fds on purpose: wrap each one only when it is connected (connectFd). Node
 * starts reading a socket made from an fd at once, and on a TCP socket that is not connecting
 * yet that read fails with ENOTCONN at the next poll and destroys the socket: wrapping
 * thousands up front and connecting them a few at a time loses all but the first ~1,000
 * (what libuv's first poll of the loop reports).
 */
export function createSocketFdsIn(name: string, n: number): number[] {
  return withNetns(`/var/run/netns/${name}`, () => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(createMarkedSocketFd({ family: 4, mark: 0 }));
    return out;
  });
}

/** Wraps `fd` (from createSocketFdsIn) and starts connecting it in the same tick; see createSocketFdsIn. */
export function connectFd(fd: number, host: string, port: number, onConnect?: () => void, allowHalfOpen = true): net.Socket {
  const sock = new net.Socket({ fd, allowHalfOpen });
  return sock.connect({ host, port }, onConnect);
}

/** Closes fds from createSocketFdsIn that were never wrapped. */
export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

/** Connects a socket from netns `name`; resolves once established, rejects on error or after `timeoutMs`. */
export function connectFrom(name: string, host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  const [fd] = createSocketFdsIn(name, 1);
  return new Promise((resolve, reject) => {
    const sock = connectFd(fd!, host, port, () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect to ${host}:${port} from ${name}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}

export interface EchoOutcome {
  ok: boolean;
  /** ms from the start of the attempt to its outcome. */
  ms: number;
  /** 'echoed', or how it failed: 'reset', 'closed', an errno code, 'timeout'. */
  how: string;
}

/**
 * One request through the mesh to an echo server: connect from netns `name`, send `payload`,
 * wait for it to come back in full. Through a capturing ztunnel the TCP connect itself
 * always succeeds at once (the local ztunnel accepts); a failure further on shows as a
 * reset or close, which is what this reports, with the time it took.
 */
export async function tryEcho(name: string, host: string, port: number, timeoutMs: number, payload = Buffer.from(`echo ${Date.now()}\n`)): Promise<EchoOutcome> {
  const t0 = performance.now();
  const [fd] = createSocketFdsIn(name, 1);
  return await new Promise<EchoOutcome>((resolve) => {
    let done = false;
    let got = Buffer.alloc(0);
    const finish = (ok: boolean, how: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ok, how, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), timeoutMs);
    const sock = connectFd(fd!, host, port, () => sock.write(payload));
    sock.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code === 'ECONNRESET' ? 'reset' : (err.code ?? err.message)));
    sock.on('close', () => finish(false, 'closed'));
    sock.on('end', () => finish(false, 'closed'));
    sock.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length >= payload.length) finish(got.subarray(0, payload.length).equals(payload), 'echoed');
    });
  });
}
