// Fuzz: the SOCKS5 handshake (src/capture/socks5.ts). The pure parsers on arbitrary bytes and
// every prefix; handleSocks5 over real loopback sockets with the bytes cut into random chunks:
// a valid handshake connects exactly once to the right target and passes on the bytes after it;
// anything else ends in one error report and a closed socket, never a crash or a hang.
// Seeds: test/helpers/fuzz.ts.
import t from 'tap';
import fc from 'fast-check';
import net from 'node:net';
import { once } from 'node:events';
import { handleSocks5, parseGreeting, parseRequest, type Socks5Target } from '../../src/capture/socks5.js';
import { fuzz, fuzzAsync } from '../helpers/fuzz.js';

const bytes = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.tuple(fc.constantFrom(1, 3, 4, 9), fc.uint8Array({ maxLength: 30 })).map(([atyp, rest]) => Uint8Array.from([5, 1, 0, atyp, ...rest])),
  fc.tuple(fc.nat(255), fc.uint8Array({ maxLength: 10 })).map(([n, rest]) => Uint8Array.from([5, n, ...rest])),
);

t.test('parsers: never throw, never over-consume, and a prefix is "more" or the same answer', async (t) => {
  for (const [what, parse] of [['greeting', parseGreeting], ['request', parseRequest]] as const) {
    fuzz(t, what, bytes, (u) => {
      const buf = Buffer.from(u);
      const r = parse(buf);
      if ((r.kind === 'greeting' || r.kind === 'request') && (r.consumed > buf.length || r.consumed < 2)) throw new Error(`consumed ${r.consumed} of ${buf.length}`);
      if (r.kind === 'request' && (r.port < 0 || r.port > 65535)) throw new Error(`port ${r.port}`);
      for (let k = 0; k < buf.length; k++) {
        const p = parse(buf.subarray(0, k));
        if (p.kind === 'more') continue;
        // Once an answer is possible from a prefix, more bytes must not change it.
        if (JSON.stringify(p) !== JSON.stringify(r)) throw new Error(`prefix ${k} gives ${JSON.stringify(p)}, whole ${JSON.stringify(r)}`);
      }
    }, { runs: 3000, perInputMs: 2000 });
  }
});

/** A client conversation: a greeting, a request, extra payload; some of them damaged. */
const conversation = fc
  .record({
    methods: fc.oneof(fc.constant([0]), fc.uint8Array({ maxLength: 4 }).map((m) => [...m])),
    version: fc.constantFrom(5, 5, 5, 4),
    cmd: fc.constantFrom(1, 1, 1, 2),
    target: fc.oneof(
      fc.uint8Array({ minLength: 4, maxLength: 4 }).map((addr) => ({ atyp: 1, addr })),
      fc.uint8Array({ minLength: 16, maxLength: 16 }).map((addr) => ({ atyp: 4, addr })),
      fc.constantFrom('svc.mesh', 'unknown.example', '').map((name) => ({ atyp: 3, addr: Uint8Array.from(Buffer.from(name)) })),
    ),
    port: fc.integer({ min: 0, max: 65535 }),
    payload: fc.uint8Array({ maxLength: 20 }),
    truncateBy: fc.constantFrom(0, 0, 0, 1, 3),
    cuts: fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 12 }),
  })
  .map((c) => {
    const { atyp, addr } = c.target;
    const addrBytes = atyp === 3 ? [addr.length, ...addr] : [...addr];
    const greeting = [c.version, c.methods.length, ...c.methods];
    const request = [5, c.cmd, 0, atyp, ...addrBytes, c.port >> 8, c.port & 255];
    const all = Buffer.from([...greeting, ...request, ...c.payload]);
    const wire = all.subarray(0, all.length - (c.payload.length === 0 ? c.truncateBy : 0));
    // Bytes are cut off the end only when there is no payload, i.e. from the request itself.
    const valid = c.version === 5 && c.methods.includes(0) && c.cmd === 1 && (c.truncateBy === 0 || c.payload.length > 0);
    const resolvable = atyp !== 3 || Buffer.from(addr).toString() === 'svc.mesh';
    return { ...c, wire, valid: valid && resolvable, payloadBytes: Buffer.from(c.payload) };
  });

t.test('handleSocks5 over loopback sockets, random chunking', async (t) => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const { port } = server.address() as net.AddressInfo;

  await fuzzAsync(t, 'conversations', conversation, async (c) => {
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    const [socket] = await accepted;
    const connects: Socks5Target[] = [];
    const errors: string[] = [];
    const tail: Buffer[] = [];
    handleSocks5(
      socket,
      (h) => (h === 'svc.mesh' ? '10.96.0.7' : undefined),
      (target, answer) => {
        connects.push(target);
        // As the relay does: take the stream over, then answer (ok() resumes reading).
        socket.on('data', (d: Buffer) => tail.push(d));
        answer.ok();
      },
      (reason) => errors.push(reason),
    );
    const received: Buffer[] = [];
    client.on('data', (d: Buffer) => received.push(d));
    // Write the bytes in the generated chunk sizes, each in its own tick.
    let off = 0;
    for (const cut of c.cuts.length ? c.cuts : [c.wire.length]) {
      if (off >= c.wire.length) break;
      client.write(c.wire.subarray(off, off + cut));
      off += cut;
      await new Promise((r) => setImmediate(r));
    }
    if (off < c.wire.length) client.write(c.wire.subarray(off));
    // Let the handshake settle (generous: the machine is shared), then read what the server got.
    // A handshake cut short gets no answer at all (until the 10 s handshake timeout): wait briefly.
    const incomplete = !c.valid && c.truncateBy > 0 && c.payload.length === 0 && c.version === 5 && c.methods.includes(0) && c.cmd === 1;
    const deadline = Date.now() + (incomplete ? 50 : 2000);
    const got = (): number => tail.reduce((n, b) => n + b.length, 0);
    const settled = (): boolean => errors.length > 0 || (connects.length > 0 && got() >= c.payloadBytes.length);
    while (Date.now() < deadline && !settled()) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 10)); // a second report or connect would show up here
    client.destroy();
    socket.destroy();
    if (connects.length > 1 || errors.length > 1) throw new Error(`connect ${connects.length}×, error ${errors.length}×: ${errors.join('; ')}`);
    if (c.valid) {
      if (connects.length !== 1) throw new Error(`valid handshake not connected (errors: ${errors.join('; ')})`);
      const after = Buffer.concat(tail);
      if (!after.equals(c.payloadBytes)) throw new Error(`payload after the handshake: got ${after.toString('hex')}, sent ${c.payloadBytes.toString('hex')}`);
    } else {
      if (connects.length !== 0) throw new Error(`an invalid handshake connected to ${JSON.stringify(connects[0])}`);
      if (!incomplete && errors.length !== 1) throw new Error('an invalid handshake was not reported');
      if (incomplete && errors.length !== 0) throw new Error(`an incomplete handshake was reported: ${errors.join('; ')}`);
    }
  }, { runs: 200, perInputMs: 5000 });

  // Regression (found by this fuzzer, seed 681013760, greeting [5,0] then a request, one byte per
  // chunk): bytes that arrived after a refused greeting were parsed and reported again, per chunk.
  const errors: string[] = [];
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  const [socket] = await accepted;
  handleSocks5(socket, () => undefined, () => t.fail('no connect'), (r) => errors.push(r));
  for (const chunk of [[4, 1, 0], [4], [4, 1], [5]]) {
    client.write(Buffer.from(chunk));
    await new Promise((r) => setTimeout(r, 30));
  }
  client.destroy();
  socket.destroy();
  t.same(errors, ['not SOCKS5 (version 4)'], 'one failure, reported once');
});
