// SOCKS5 request parsing (RFC 1928): partial input, bad input, canonical IPv6 text.
import t from 'tap';
import { parseGreeting, parseRequest } from '../../src/capture/socks5.js';

const req = (atyp: number, addr: number[], port = 80): Buffer => Buffer.from([5, 1, 0, atyp, ...addr, port >> 8, port & 255]);

t.test('greeting', async (t) => {
  t.same(parseGreeting(Buffer.from([5])), { kind: 'more' });
  t.match(parseGreeting(Buffer.from([5, 2, 0, 2])), { kind: 'greeting', consumed: 4, noAuth: true });
  t.match(parseGreeting(Buffer.from([5, 1, 2])), { kind: 'greeting', noAuth: false });
  t.match(parseGreeting(Buffer.from([4, 1, 0])), { kind: 'error' });
});

t.test('requests', async (t) => {
  t.match(parseRequest(req(1, [10, 96, 0, 10], 9080)), { kind: 'request', host: '10.96.0.10', port: 9080, consumed: 10 });
  t.same(parseRequest(req(1, [10, 96, 0]).subarray(0, 8)), { kind: 'more' });
  const v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
  t.match(parseRequest(req(4, v6)), { kind: 'request', host: 'fd00::5' }, 'IPv6 in canonical form, so lookups match');
  const loop6 = [...Array(15).fill(0), 1];
  t.match(parseRequest(req(4, loop6, 15001)), { host: '::1', port: 15001 }, '::1 is recognisable by the loop guard');
  const mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
  t.match(parseRequest(req(4, mapped)), { host: '127.0.0.1' }, 'IPv4-mapped → IPv4');
  const name = Buffer.from('productpage');
  t.match(parseRequest(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([0x23, 0x78])])), { host: 'productpage', port: 9080 });
  t.match(parseRequest(Buffer.from([5, 2, 0, 1, 0, 0, 0, 0, 0, 0])), { kind: 'error', reply: 7 }, 'BIND is not supported');
  t.match(parseRequest(Buffer.from([5, 1, 0, 9, 0, 0])), { kind: 'error', reply: 8 }, 'unknown address type');
});
