// Table-driven tests of src/util/ip.ts: parsing, canonical text, CIDR containment, host:port.

import t from 'tap';
import {
  canonicalIp,
  cidrContains,
  formatHostPort,
  ipEquals,
  parseCidr,
  parseHostPort,
  parseIp,
  type ParsedIp,
} from '../../src/util/ip.js';

t.test('parseIp / canonicalIp', async (t) => {
  // [input, canonical text or undefined (invalid), family]
  const rows: [string, string | undefined, (4 | 6)?][] = [
    ['1.2.3.4', '1.2.3.4', 4],
    ['0.0.0.0', '0.0.0.0', 4],
    ['255.255.255.255', '255.255.255.255', 4],
    ['10.0.0.1', '10.0.0.1', 4],
    ['::', '::', 6],
    ['::1', '::1', 6],
    ['1::', '1::', 6],
    ['FD00::0001', 'fd00::1', 6],
    ['fd00:0:0:0:0:0:0:1', 'fd00::1', 6],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', 6], // first of equal-length zero runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1', 6], // a single zero group is not compressed
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8', 6],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0', 6],
    ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8', 6],
    ['::ffff:1.2.3.4', '1.2.3.4', 4], // IPv4-mapped → IPv4
    ['::FFFF:10.0.0.1', '10.0.0.1', 4],
    ['::ffff:a00:1', '10.0.0.1', 4], // mapped, written in hex
    ['0:0:0:0:0:ffff:102:304', '1.2.3.4', 4],
    ['64:ff9b::1.2.3.4', '64:ff9b::102:304', 6], // embedded v4 but not mapped
    ['::1.2.3.4', '::102:304', 6],
    // invalid
    ['', undefined],
    ['1.2.3', undefined],
    ['1.2.3.4.5', undefined],
    ['256.1.1.1', undefined],
    ['1.2.3.04', undefined], // leading zero
    ['1.2.3.-1', undefined],
    ['1..3.4', undefined],
    ['1.2.3.4 ', undefined],
    [' 1.2.3.4', undefined],
    ['a.b.c.d', undefined],
    ['localhost', undefined],
    [':', undefined],
    [':::', undefined],
    ['1:::2', undefined],
    ['1::2::3', undefined],
    [':1', undefined],
    ['1:', undefined],
    ['1:2:3:4:5:6:7', undefined],
    ['1:2:3:4:5:6:7:8:9', undefined],
    ['1:2:3:4:5:6:7::8', undefined], // '::' must stand for at least one group
    ['12345::', undefined],
    ['g::1', undefined],
    ['fe80::1%eth0', undefined], // zone ids rejected
    ['1.2.3.4::', undefined],
    ['::1.2.3.4:5', undefined],
    ['::1.2.3', undefined],
    ['[::1]', undefined],
    ['1.2.3.4/32', undefined],
  ];
  for (const [input, want, family] of rows) {
    const ip = parseIp(input);
    t.equal(ip?.text, want, `parseIp(${JSON.stringify(input)})`);
    t.equal(canonicalIp(input), want, `canonicalIp(${JSON.stringify(input)})`);
    if (family !== undefined) t.equal(ip?.family, family, `family of ${input}`);
  }
});

t.test('numeric form', async (t) => {
  const v4 = parseIp('192.168.1.2')!;
  t.same([v4.w0, v4.w1, v4.w2, v4.w3], [0xc0a80102, 0, 0, 0], 'IPv4 is an unsigned word in w0');
  const v6 = parseIp('ffff:ffff::8000:1')!;
  t.same([v6.w0, v6.w1, v6.w2, v6.w3], [0xffffffff, 0, 0, 0x80000001], 'IPv6 words are unsigned, most significant first');
  t.ok(ipEquals(parseIp('::ffff:192.168.1.2')!, v4), 'mapped equals plain v4');
  t.notOk(ipEquals(parseIp('::c0a8:102')!, v4), 'v4-compatible v6 is not the v4 address');
});

t.test('parseCidr', async (t) => {
  const rows: [string, string | undefined][] = [
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3/8', '10.0.0.0/8'], // host bits cleared
    ['10.0.0.5', '10.0.0.5/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['fd00::/8', 'fd00::/8'],
    ['fd00::1', 'fd00::1/128'],
    ['fd00::ff/127', 'fd00::fe/127'],
    ['::/0', '::/0'],
    ['::ffff:10.0.0.0/104', '10.0.0.0/8'], // mapped network → v4
    ['::ffff:0:0/96', '0.0.0.0/0'],
    ['::ffff:1.2.3.4', '1.2.3.4/32'],
    ['::ffff:0:0/64', '::/64'],
    ['10.0.0.0/33', undefined],
    ['fd00::/129', undefined],
    ['10.0.0.0/', undefined],
    ['10.0.0.0/-1', undefined],
    ['10.0.0.0/8/8', undefined],
    ['10.0.0.0/a', undefined],
    ['/8', undefined],
    ['10.0.0/8', undefined],
    ['', undefined],
  ];
  for (const [input, want] of rows) t.equal(parseCidr(input)?.text, want, `parseCidr(${JSON.stringify(input)})`);
});

t.test('cidrContains', async (t) => {
  // [cidr, ip, contained]
  const rows: [string, string, boolean][] = [
    ['0.0.0.0/0', '1.2.3.4', true],
    ['0.0.0.0/0', '255.255.255.255', true],
    ['0.0.0.0/0', '::1', false], // families never mix
    ['::/0', '1.2.3.4', false],
    ['::/0', 'fd00::1', true],
    ['::/0', '::ffff:1.2.3.4', false], // the mapped address is IPv4
    ['10.0.0.5/32', '10.0.0.5', true],
    ['10.0.0.5/32', '10.0.0.4', false],
    ['10.0.0.5/32', '10.0.0.6', false],
    ['10.0.0.5/32', '::ffff:10.0.0.5', true],
    ['10.0.0.0/8', '10.255.255.255', true],
    ['10.0.0.0/8', '11.0.0.0', false],
    ['10.0.0.0/8', '9.255.255.255', false],
    ['128.0.0.0/1', '200.1.1.1', true], // high bit set: sign handling
    ['128.0.0.0/1', '127.255.255.255', false],
    ['255.255.255.255/32', '255.255.255.255', true],
    ['192.168.1.128/25', '192.168.1.127', false],
    ['192.168.1.128/25', '192.168.1.200', true],
    ['fd00::1/128', 'fd00::1', true],
    ['fd00::1/128', 'fd00::2', false],
    ['fd00::1/128', 'fd00::1:1', false],
    ['fd00::/127', 'fd00::', true],
    ['fd00::/127', 'fd00::1', true],
    ['fd00::/127', 'fd00::2', false],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['fd00::/8', 'fdff:ffff::1', true],
    ['fd00::/8', 'fe00::1', false],
    ['2001:db8::/32', '2001:db8:ffff::1', true],
    ['2001:db8::/32', '2001:db9::1', false],
    ['2001:db8:0:1::/64', '2001:db8:0:1:ffff::', true], // boundary between words 1 and 2
    ['2001:db8:0:1::/64', '2001:db8:0:2::', false],
    ['2001:db8::/33', '2001:db8:8000::', false],
    ['2001:db8::/33', '2001:db8:7fff::', true],
    ['::ffff:10.0.0.0/104', '10.1.2.3', true],
  ];
  for (const [cidrText, ipText, want] of rows) {
    const cidr = parseCidr(cidrText);
    const ip = parseIp(ipText);
    if (cidr === undefined || ip === undefined) {
      t.fail(`bad row ${cidrText} ${ipText}`);
      continue;
    }
    t.equal(cidrContains(cidr, ip), want, `${cidrText} ∋ ${ipText}`);
  }
});

t.test('formatHostPort', async (t) => {
  t.equal(formatHostPort('1.2.3.4', 80), '1.2.3.4:80');
  t.equal(formatHostPort('fd00::1', 15008), '[fd00::1]:15008');
  t.equal(formatHostPort(parseIp('FD00:0::1') as ParsedIp, 8080), '[fd00::1]:8080');
  t.equal(formatHostPort(parseIp('::ffff:1.2.3.4') as ParsedIp, 1), '1.2.3.4:1');
});

t.test('parseHostPort', async (t) => {
  const rows: [string, { host: string; port: number } | undefined][] = [
    ['1.2.3.4:80', { host: '1.2.3.4', port: 80 }],
    ['1.2.3.4:0', { host: '1.2.3.4', port: 0 }],
    ['1.2.3.4:65535', { host: '1.2.3.4', port: 65535 }],
    ['[fd00::1]:80', { host: 'fd00::1', port: 80 }],
    ['[FD00:0::1]:15008', { host: 'fd00::1', port: 15008 }],
    ['[::ffff:1.2.3.4]:80', { host: '1.2.3.4', port: 80 }],
    ['[::]:1', { host: '::', port: 1 }],
    ['1.2.3.4', undefined], // missing port
    ['1.2.3.4:', undefined],
    ['1.2.3.4:65536', undefined],
    ['1.2.3.4:-1', undefined],
    ['1.2.3.4:8a', undefined],
    ['1.2.3.4:123456', undefined],
    ['fd00::1:80', undefined], // unbracketed v6
    ['::1:80', undefined],
    ['[fd00::1]', undefined],
    ['[fd00::1]:', undefined],
    ['[fd00::1]80', undefined],
    ['[fd00::1:80', undefined],
    ['[1.2.3.4]:80', undefined],
    ['[fe80::1%eth0]:80', undefined],
    ['example.com:80', undefined],
    [':80', undefined],
    ['', undefined],
  ];
  for (const [input, want] of rows) t.same(parseHostPort(input), want, `parseHostPort(${JSON.stringify(input)})`);
});
