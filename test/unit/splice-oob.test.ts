// TCP urgent data must not truncate a spliced stream: splice(2) stops at the urgent mark,
// so the worker switches to recv(2) (which drops only the out-of-band byte, as Node does)
// until the socket is drained. The sender is python3, since Node cannot send MSG_OOB.
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import t from 'tap';
import { copyBidirectional, socketSide } from '../../src/copy/copy.js';
import { spliceBidirectional, startSpliceWorker, stopSpliceWorker } from '../../src/copy/splice-copy.js';

const python = spawnSync('python3', ['-c', 'print(1)']).status === 0;

async function relayOnce(useSplice: boolean): Promise<{ got: number; counted: number }> {
  let got = 0;
  const app = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => (got += d.length));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const counters = { clientToServer: 0, serverToClient: 0 };
  let done: Promise<unknown> = Promise.resolve();
  const front = net.createServer({ allowHalfOpen: true }, (down) => {
    down.on('error', () => undefined);
    const up = net.connect({ port: (app.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    up.on('error', () => undefined);
    up.once('connect', () => {
      done = useSplice ? spliceBidirectional(down, up, counters) : copyBidirectional(socketSide(down), socketSide(up), counters);
    });
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const port = (front.address() as net.AddressInfo).port;
  const py = [
    'import socket, time',
    `s = socket.create_connection(('127.0.0.1', ${port}))`,
    'time.sleep(0.2)',
    "s.sendall(b'a' * 1000); time.sleep(0.1)",
    "s.send(b'!', socket.MSG_OOB); time.sleep(0.1)",
    "s.sendall(b'b' * 5000); time.sleep(0.3)",
    's.shutdown(socket.SHUT_WR); s.recv(10); s.close()',
  ].join('\n');
  await new Promise((r) => spawn('python3', ['-c', py], { stdio: 'ignore' }).on('exit', r));
  await done;
  await new Promise((r) => setTimeout(r, 100));
  app.close();
  front.close();
  return { got, counted: counters.clientToServer };
}

if (!python) {
  t.plan(0, 'python3 is not installed (needed to send MSG_OOB)');
} else {
  t.before(async () => {
    await startSpliceWorker();
  });
  t.teardown(() => stopSpliceWorker());
  t.test('the JS loop and the splice worker deliver the same bytes around urgent data', async (t) => {
    const js = await relayOnce(false);
    const spliced = await relayOnce(true);
    t.equal(js.got, 6000, 'the JS loop: everything but the out-of-band byte');
    t.equal(spliced.got, js.got, 'splice: the same, nothing after the urgent mark is lost');
    t.equal(spliced.counted, spliced.got, 'and counted');
  });
}
