// DER encoder/reader vectors (X.690) and X.509 extension encodings checked byte for byte.
import t from 'tap';
import * as asn1 from '../../src/identity/asn1.js';
import {
  basicConstraintsExtension,
  keyUsageExtension,
  KeyUsageBit,
  readKeyUsageBits,
  readUriSans,
  uriSubjectAltNameExtension,
} from '../../src/identity/x509.js';

const hex = (b: Buffer): string => b.toString('hex');

t.test('INTEGER is minimal two’s complement', async (t) => {
  const rows: [bigint | number | Buffer, string][] = [
    [0, '020100'],
    [1, '020101'],
    [127, '02017f'],
    [128, '02020080'],
    [256, '02020100'],
    [2n ** 64n, '0209010000000000000000'],
    [Buffer.from([0, 0, 0x7f]), '02017f'],
    [Buffer.from([0xff, 0x01]), '020300ff01'],
    [Buffer.alloc(0), '020100'],
  ];
  for (const [value, want] of rows) t.equal(hex(asn1.integer(value)), want, `integer(${String(value)})`);
  t.throws(() => asn1.integer(-1));
});

t.test('OID encodes base-128 arcs', async (t) => {
  t.equal(hex(asn1.oid('1.2.840.10045.4.3.2')), '06082a8648ce3d040302');
  t.equal(hex(asn1.oid('2.5.29.17')), '0603551d11');
  t.equal(hex(asn1.oid('1.3.6.1.5.5.7.3.1')), '06082b06010505070301');
  t.equal(asn1.decodeOid(asn1.readNode(asn1.oid('1.2.840.113549.1.1.11')).content), '1.2.840.113549.1.1.11');
  t.equal(asn1.decodeOid(asn1.readNode(asn1.oid('2.999.3')).content), '2.999.3');
  t.throws(() => asn1.oid('1'));
  t.throws(() => asn1.oid('1.40'));
  t.throws(() => asn1.oid('1.2.x'));
});

t.test('lengths use the long form only from 128 octets', async (t) => {
  t.equal(hex(asn1.octetString(Buffer.alloc(127)).subarray(0, 2)), '047f');
  t.equal(hex(asn1.octetString(Buffer.alloc(128)).subarray(0, 3)), '048180');
  t.equal(hex(asn1.octetString(Buffer.alloc(300)).subarray(0, 4)), '0482012c');
  const big = asn1.octetString(Buffer.alloc(70000, 7));
  const node = asn1.readNode(big);
  t.equal(node.content.length, 70000);
  t.equal(node.raw.length, big.length);
});

t.test('named bit strings drop trailing zero bits', async (t) => {
  t.equal(hex(asn1.namedBitString([0, 2])), '030205a0');
  t.equal(hex(asn1.namedBitString([5, 6])), '03020106');
  t.equal(hex(asn1.namedBitString([0])), '03020780');
  t.equal(hex(asn1.namedBitString([8])), '0303070080');
  t.equal(hex(asn1.namedBitString([])), '030100');
  t.same(readKeyUsageBits(keyUsageExtension([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]).value), [5, 6]);
});

t.test('time switches from UTCTime to GeneralizedTime in 2050', async (t) => {
  t.equal(asn1.time(new Date('2049-12-31T23:59:59.999Z')).toString('latin1', 2), '491231235959Z');
  t.equal(asn1.time(new Date('2049-12-31T23:59:59Z'))[0], asn1.Tag.UTC_TIME);
  const g = asn1.time(new Date('2050-01-01T00:00:00Z'));
  t.equal(g[0], asn1.Tag.GENERALIZED_TIME);
  t.equal(g.toString('latin1', 2), '20500101000000Z');
  t.throws(() => asn1.time(new Date('1949-01-01T00:00:00Z')));
});

t.test('SET OF is sorted, booleans and null are canonical', async (t) => {
  t.equal(hex(asn1.setOf(asn1.integer(2), asn1.integer(1))), '3106020101020102');
  t.equal(hex(asn1.boolean(true)), '0101ff');
  t.equal(hex(asn1.boolean(false)), '010100');
  t.equal(hex(asn1.nullValue()), '0500');
  t.equal(hex(asn1.explicit(0, asn1.integer(2))), 'a003020102');
});

t.test('reader rejects truncated and oversized input', async (t) => {
  t.throws(() => asn1.readNode(Buffer.from([0x30])), /truncated/);
  t.throws(() => asn1.readNode(Buffer.from([0x30, 0x05, 0x01])), /exceeds/);
  t.throws(() => asn1.readNode(Buffer.from([0x30, 0x85, 1, 1, 1, 1, 1])), /unsupported length/);
  t.throws(() => asn1.readChildren(Buffer.from([0x02, 0x01, 0x00, 0x02])), /truncated/);
  const seq = asn1.sequence(asn1.integer(1), asn1.nullValue());
  t.same(
    asn1.readChildren(asn1.readNode(seq).content).map((n) => n.tag),
    [asn1.Tag.INTEGER, asn1.Tag.NULL],
  );
});

t.test('extension values', async (t) => {
  t.equal(hex(basicConstraintsExtension(true).value), '30030101ff');
  t.equal(hex(basicConstraintsExtension(false).value), '3000', 'CA:FALSE is the omitted DEFAULT');
  const san = uriSubjectAltNameExtension('spiffe://td/ns/a/sa/b', true);
  t.equal(san.critical, true);
  t.same(readUriSans(san.value), ['spiffe://td/ns/a/sa/b']);
  t.throws(() => uriSubjectAltNameExtension('spiffe://td/ns/ä/sa/b', true), /IA5/);
});
