// loadConfig(env): defaults, every variable parsed, every kind of bad value rejected with
// the variable named, and the cross-variable rules (dedicated mode, exclusivity, admin bind).

import t from 'tap';
import { ZtError } from '../../src/errors.js';
import { DEFAULTS, ENV, MAX_WORKER_THREADS, defaultWorkerThreads, loadConfig } from '../../src/config/env.js';
import { parseDurationMs } from '../../src/config/duration.js';
import type { Config } from '../../src/config/types.js';

type Env = Record<string, string | undefined>;

/** A node-mode config needs NODE_NAME; most cases here are about something else. */
function load(env: Env): Config {
  return loadConfig({ NODE_NAME: 'node-a', ...env });
}

function configError(env: Env): ZtError {
  try {
    load(env);
  } catch (err) {
    if (err instanceof ZtError) return err;
    throw err;
  }
  throw new Error(`expected loadConfig(${JSON.stringify(env)}) to throw`);
}

t.test('defaults', async (t) => {
  const c = load({});
  t.same(c, {
    proxyMode: 'node',
    proxyWorkloadInfo: undefined,
    nodeName: 'node-a',
    trustDomain: 'cluster.local',
    clusterId: 'Kubernetes',
    network: '',
    localXdsPath: undefined,
    localXds: undefined,
    enableOrigSrc: undefined,
    packetMark: undefined,
    http2StreamWindowSize: 4194304,
    http2ConnectionWindowSize: 16777216,
    http2FrameSize: 1048576,
    poolMaxStreamsPerConnection: 100,
    poolUnusedReleaseTimeoutMs: 300_000,
    connectionTerminationDeadlineMs: 5_000,
    logFormat: 'plain',
    logLevel: 'info',
    accessLogOnlyFailed: false,
    enableSocks5: false,
    ipv6Enabled: true,
    localCaCert: undefined,
    localCaKey: undefined,
    ports: {
      outbound: 15001,
      inboundPlaintext: 15006,
      inbound: 15008,
      socks5: 15080,
      admin: 15000,
      stats: 15020,
      readiness: 15021,
      hboneTarget: 15008,
    },
    bindAddress: '::',
    adminBindAddress: '127.0.0.1',
    connectTimeoutMs: 10_000,
    spliceEnabled: true,
    workerThreads: defaultWorkerThreads(),
    // No local config: istiod (outside a cluster: localhost:15012), its CA at the same address.
    xds: { address: 'localhost:15012', rootCa: { kind: 'file', path: '/var/run/secrets/istio/root-cert.pem' }, altHostname: undefined, headers: {} },
    ca: { address: 'localhost:15012', rootCa: { kind: 'file', path: '/var/run/secrets/istio/root-cert.pem' }, altHostname: undefined, headers: {} },
    authToken: { kind: 'file', path: '/var/run/secrets/tokens/istio-token' },
    secretTtlMs: 86_400_000,
    self: { podName: undefined, podNamespace: undefined, serviceAccount: undefined, instanceIp: undefined },
    proxyMetadata: {},
  } satisfies Config);
  t.equal(ENV.PROXY_MODE, 'PROXY_MODE');
  t.equal(DEFAULTS.ports.inbound, 15008);
});

t.test('control plane: xDS address, CA, roots, token, metadata', async (t) => {
  const ROOT = { kind: 'file', path: '/var/run/secrets/istio/root-cert.pem' };
  // A local config means no xDS unless asked; XDS_ADDRESS="" disables it (upstream's way).
  t.equal(load({ LOCAL_XDS: 'workloads: []\n' }).xds, undefined);
  t.equal(load({ LOCAL_XDS: 'workloads: []\n' }).ca, undefined, 'local config without CA_ADDRESS: built-in CA');
  t.equal(load({ XDS_ADDRESS: '' }).xds, undefined);
  t.equal(load({ XDS_ADDRESS: '' }).ca, undefined);
  t.equal(load({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }).xds?.address, 'istiod.istio-system.svc:15012');
  t.equal(load({ XDS_ADDRESS: 'https://istiod.istio-system.svc:15012' }).xds?.address, 'istiod.istio-system.svc:15012');
  t.equal(load({ XDS_ADDRESS: '[::1]:15012' }).xds?.address, '[::1]:15012');
  t.same(load({ XDS_ADDRESS: '10.0.0.2:15012' }).ca, { address: '10.0.0.2:15012', rootCa: ROOT, altHostname: undefined, headers: {} }, 'the CA defaults to the xDS address');
  t.equal(load({ XDS_ADDRESS: '10.0.0.2:15012', CA_ADDRESS: 'ca.example:443' }).ca?.address, 'ca.example:443');
  t.equal(load({ XDS_ADDRESS: '10.0.0.2:15012', FAKE_CA: 'true' }).ca, undefined, 'FAKE_CA: built-in CA with xDS');
  t.equal(load({ LOCAL_XDS: 'workloads: []\n', CA_ADDRESS: '10.0.0.2:15012' }).ca?.address, '10.0.0.2:15012', 'local config + istiod CA');
  t.same(load({ XDS_ROOT_CA: 'SYSTEM' }).xds?.rootCa, { kind: 'system' });
  t.same(load({ XDS_ROOT_CA: './root.pem' }).xds?.rootCa, { kind: 'file', path: './root.pem' });
  t.same(load({ XDS_ROOT_CA: './root.pem' }).ca?.rootCa, { kind: 'file', path: './root.pem' }, 'CA_ROOT_CA defaults to XDS_ROOT_CA');
  t.same(load({ XDS_ROOT_CA: './root.pem', CA_ROOT_CA: './ca.pem' }).ca?.rootCa, { kind: 'file', path: './ca.pem' });
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----';
  t.same(load({ CA_ROOT_CA: pem }).ca?.rootCa, { kind: 'pem', pem });
  t.equal(load({ ALT_XDS_HOSTNAME: 'istiod.example' }).xds?.altHostname, 'istiod.example');
  t.same(load({ XDS_HEADER_X_Tenant: 'a', CA_HEADER_FOO: 'b' }).xds?.headers, { x_tenant: 'a' });
  t.same(load({ XDS_HEADER_X_Tenant: 'a', CA_HEADER_FOO: 'b' }).ca?.headers, { foo: 'b' });
  t.same(load({ AUTH_TOKEN: '/tmp/token' }).authToken, { kind: 'file', path: '/tmp/token' });
  t.same(load({ AUTH_TOKEN: 'abc.def' }).authToken, { kind: 'literal', value: 'abc.def' });
  t.equal(load({ SECRET_TTL: '30s' }).secretTtlMs, 30_000);
  t.same(load({ POD_NAME: 'ztunnel-x', POD_NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'ztunnel', INSTANCE_IP: '10.0.0.5' }).self, {
    podName: 'ztunnel-x',
    podNamespace: 'istio-system',
    serviceAccount: 'ztunnel',
    instanceIp: '10.0.0.5',
  });
  t.same(load({ ISTIO_META_DNS_CAPTURE: 'true', ISTIO_METAJSON_LABELS: '{"app":"z"}', ISTIO_META_CLUSTER_ID: 'c9' }).proxyMetadata, {
    DNS_CAPTURE: 'true',
    LABELS: { app: 'z' },
    CLUSTER_ID: 'c9',
  });
  const bad: [Env, string, RegExp][] = [
    [{ XDS_ADDRESS: 'http://istiod:15012' }, 'XDS_ADDRESS', /only https/],
    [{ XDS_ADDRESS: 'istiod' }, 'XDS_ADDRESS', /host:port/],
    [{ XDS_ADDRESS: 'istiod:0' }, 'XDS_ADDRESS', /host:port/],
    [{ XDS_ADDRESS: 'istiod:15012', LOCAL_XDS: 'workloads: []\n' }, 'XDS_ADDRESS', /choose one source/],
    [{ CA_ADDRESS: 'istiod:15012', FAKE_CA: 'true' }, 'CA_ADDRESS', /built-in/],
    [{ XDS_ROOT_CA: '-----BEGIN PRIVATE KEY-----' }, 'XDS_ROOT_CA', /CERTIFICATE/],
    [{ ISTIO_METAJSON_X: '{nope' }, 'ISTIO_METAJSON_X', /not valid JSON/],
    [{ SECRET_TTL: '1s' }, 'SECRET_TTL', /at least/],
    [{ INSTANCE_IP: 'ten' }, 'INSTANCE_IP', /not an IP/],
    [{ XDS_HEADER_bad$: 'x' }, 'XDS_HEADER_bad$', /metadata name/],
  ];
  for (const [env, name, re] of bad) {
    const err = configError({ NODE_NAME: 'node-a', ...env });
    t.ok(err.message.startsWith(`${name}:`), `${JSON.stringify(env)} names ${name}: ${err.message}`);
    t.match(err.message, re);
  }
});

t.test('result is deep-frozen', async (t) => {
  const c = loadConfig({ PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'ns/name/sa' });
  t.ok(Object.isFrozen(c));
  t.ok(Object.isFrozen(c.ports));
  t.ok(Object.isFrozen(c.proxyWorkloadInfo));
  t.throws(() => {
    (c as { trustDomain: string }).trustDomain = 'x';
  }, TypeError);
  t.throws(() => {
    (c.ports as { admin: number }).admin = 1;
  }, TypeError);
});

t.test('each variable is parsed', async (t) => {
  const cases: [Env, (c: Config) => unknown, unknown][] = [
    [{ PROXY_MODE: 'shared' }, (c) => c.proxyMode, 'node'],
    [{ PROXY_MODE: 'node' }, (c) => c.proxyMode, 'node'],
    [{ PROXY_MODE: 'Dedicated', PROXY_WORKLOAD_INFO: 'default/client/client-sa' }, (c) => c.proxyMode, 'dedicated'],
    [
      { PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'default/client/client-sa' },
      (c) => c.proxyWorkloadInfo,
      { namespace: 'default', name: 'client', serviceAccount: 'client-sa' },
    ],
    [{ NODE_NAME: 'node-a' }, (c) => c.nodeName, 'node-a'],
    [{ ZTUNNEL_SPLICE: 'false' }, (c) => c.spliceEnabled, false],
    [{ PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'a/b/c', NODE_NAME: '' }, (c) => c.nodeName, undefined],
    [{ TRUST_DOMAIN: 'example.org' }, (c) => c.trustDomain, 'example.org'],
    [{ CLUSTER_ID: 'c1' }, (c) => c.clusterId, 'c1'],
    [{ CLUSTER_ID: 'c1', ISTIO_META_CLUSTER_ID: 'meta' }, (c) => c.clusterId, 'meta'],
    [{ NETWORK: 'net-a' }, (c) => c.network, 'net-a'],
    [{ LOCAL_XDS_PATH: '/etc/zt.yaml' }, (c) => c.localXdsPath, '/etc/zt.yaml'],
    [{ LOCAL_XDS: 'workloads: []\n' }, (c) => c.localXds, 'workloads: []\n'],
    [{ ENABLE_ORIG_SRC: 'true' }, (c) => c.enableOrigSrc, true],
    [{ ENABLE_ORIG_SRC: 'FALSE' }, (c) => c.enableOrigSrc, false],
    [{ ENABLE_ORIG_SRC: '0' }, (c) => c.enableOrigSrc, false],
    [{ PACKET_MARK: '1337' }, (c) => c.packetMark, 1337],
    [{ PACKET_MARK: '0x539' }, (c) => c.packetMark, 1337],
    [{ PACKET_MARK: '0xFFFFFFFF' }, (c) => c.packetMark, 0xffffffff],
    [{ HTTP2_STREAM_WINDOW_SIZE: '65535' }, (c) => c.http2StreamWindowSize, 65535],
    [{ HTTP2_CONNECTION_WINDOW_SIZE: '0x100000' }, (c) => c.http2ConnectionWindowSize, 1048576],
    [{ HTTP2_FRAME_SIZE: '16384' }, (c) => c.http2FrameSize, 16384],
    [{ HTTP2_FRAME_SIZE: '16777215' }, (c) => c.http2FrameSize, 16777215],
    [{ POOL_MAX_STREAMS_PER_CONNECTION: '1' }, (c) => c.poolMaxStreamsPerConnection, 1],
    [{ POOL_UNUSED_RELEASE_TIMEOUT: '1m30s' }, (c) => c.poolUnusedReleaseTimeoutMs, 90_000],
    [{ POOL_UNUSED_RELEASE_TIMEOUT: '0' }, (c) => c.poolUnusedReleaseTimeoutMs, 0],
    [{ CONNECTION_TERMINATION_DEADLINE: '250ms' }, (c) => c.connectionTerminationDeadlineMs, 250],
    [{ LOG_FORMAT: 'json' }, (c) => c.logFormat, 'json'],
    [{ LOG_LEVEL: 'debug' }, (c) => c.logLevel, 'debug'],
    [{ LOG_LEVEL: 'OFF' }, (c) => c.logLevel, 'off'],
    [{ RUST_LOG: 'trace' }, (c) => c.logLevel, 'trace'],
    [{ RUST_LOG: 'warn,ztunnel::proxy=debug' }, (c) => c.logLevel, 'warn'],
    [{ RUST_LOG: 'ztunnel=debug' }, (c) => c.logLevel, 'info'],
    [{ RUST_LOG: 'trace', LOG_LEVEL: 'error' }, (c) => c.logLevel, 'error'],
    [{ ACCESS_LOG_ONLY_FAILED: 'true' }, (c) => c.accessLogOnlyFailed, true],
    [{ UNSTABLE_ENABLE_SOCKS5: '1' }, (c) => c.enableSocks5, true],
    [{ IPV6_ENABLED: 'false' }, (c) => c.ipv6Enabled, false],
    [{ IPV6_ENABLED: 'false' }, (c) => c.bindAddress, '0.0.0.0'],
    [{ LOCAL_CA_CERT: '/ca.pem', LOCAL_CA_KEY: '/ca.key' }, (c) => [c.localCaCert, c.localCaKey], ['/ca.pem', '/ca.key']],
    [{ ZTUNNEL_OUTBOUND_PORT: '0' }, (c) => c.ports.outbound, 0],
    [{ ZTUNNEL_INBOUND_PLAINTEXT_PORT: '25006' }, (c) => c.ports.inboundPlaintext, 25006],
    [{ ZTUNNEL_INBOUND_PORT: '25008' }, (c) => c.ports.inbound, 25008],
    [{ ZTUNNEL_SOCKS5_PORT: '25080' }, (c) => c.ports.socks5, 25080],
    [{ ZTUNNEL_ADMIN_PORT: '25000' }, (c) => c.ports.admin, 25000],
    [{ ZTUNNEL_STATS_PORT: '25020' }, (c) => c.ports.stats, 25020],
    [{ ZTUNNEL_READINESS_PORT: '25021' }, (c) => c.ports.readiness, 25021],
    [{ ZTUNNEL_HBONE_TARGET_PORT: '35008' }, (c) => c.ports.hboneTarget, 35008],
    [{ ZTUNNEL_BIND_ADDRESS: '127.0.0.1' }, (c) => c.bindAddress, '127.0.0.1'],
    [{ ZTUNNEL_BIND_ADDRESS: '0:0::0' }, (c) => c.bindAddress, '::'],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: '::1' }, (c) => c.adminBindAddress, '::1'],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: '127.0.0.9' }, (c) => c.adminBindAddress, '127.0.0.9'],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: '::ffff:127.0.0.1' }, (c) => c.adminBindAddress, '127.0.0.1'],
    [{ CONNECT_TIMEOUT: '2s' }, (c) => c.connectTimeoutMs, 2000],
    [{ CONNECT_TIMEOUT: '1.5' }, (c) => c.connectTimeoutMs, 1500],
  ];
  for (const [env, pick, want] of cases) {
    t.same(pick(load(env)), want, JSON.stringify(env));
  }
});

t.test('bad values are rejected naming the variable', async (t) => {
  const cases: [Env, string, string][] = [
    [{ PROXY_MODE: 'sidecar' }, 'PROXY_MODE', "expected one of node, shared, dedicated, got 'sidecar'"],
    [{ PROXY_WORKLOAD_INFO: 'default/client' }, 'PROXY_WORKLOAD_INFO', 'expected namespace/name/serviceAccount'],
    [{ PROXY_WORKLOAD_INFO: 'default//sa' }, 'PROXY_WORKLOAD_INFO', 'expected namespace/name/serviceAccount'],
    [{ TRUST_DOMAIN: 'a/b' }, 'TRUST_DOMAIN', 'is not a trust domain'],
    [{ ENABLE_ORIG_SRC: 'yes' }, 'ENABLE_ORIG_SRC', "expected true, false, 1 or 0, got 'yes'"],
    [{ ACCESS_LOG_ONLY_FAILED: 'maybe' }, 'ACCESS_LOG_ONLY_FAILED', "got 'maybe'"],
    [{ UNSTABLE_ENABLE_SOCKS5: 'on' }, 'UNSTABLE_ENABLE_SOCKS5', "got 'on'"],
    [{ IPV6_ENABLED: '2' }, 'IPV6_ENABLED', "got '2'"],
    [{ PACKET_MARK: 'abc' }, 'PACKET_MARK', "expected an integer (decimal or 0x hex), got 'abc'"],
    [{ PACKET_MARK: '-1' }, 'PACKET_MARK', 'expected an integer'],
    [{ PACKET_MARK: '0x100000000' }, 'PACKET_MARK', 'expected an integer in 0..4294967295'],
    [{ PACKET_MARK: '1.5' }, 'PACKET_MARK', 'expected an integer'],
    [{ HTTP2_STREAM_WINDOW_SIZE: '0' }, 'HTTP2_STREAM_WINDOW_SIZE', 'in 1..2147483647'],
    [{ HTTP2_CONNECTION_WINDOW_SIZE: '2147483648' }, 'HTTP2_CONNECTION_WINDOW_SIZE', 'in 1..2147483647'],
    [{ HTTP2_FRAME_SIZE: '16383' }, 'HTTP2_FRAME_SIZE', 'in 16384..16777215'],
    [{ HTTP2_FRAME_SIZE: '16777216' }, 'HTTP2_FRAME_SIZE', 'in 16384..16777215'],
    [{ POOL_MAX_STREAMS_PER_CONNECTION: '0' }, 'POOL_MAX_STREAMS_PER_CONNECTION', 'in 1..'],
    [{ POOL_UNUSED_RELEASE_TIMEOUT: '5 minutes' }, 'POOL_UNUSED_RELEASE_TIMEOUT', "expected a duration"],
    [{ CONNECTION_TERMINATION_DEADLINE: '-5s' }, 'CONNECTION_TERMINATION_DEADLINE', 'expected a duration'],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '30s' }, 'TERMINATION_GRACE_PERIOD_SECONDS', 'expected an integer'],
    [{ CONNECT_TIMEOUT: '0' }, 'CONNECT_TIMEOUT', 'must be at least 1ms'],
    [{ CONNECT_TIMEOUT: '10x' }, 'CONNECT_TIMEOUT', 'expected a duration'],
    [{ LOG_FORMAT: 'xml' }, 'LOG_FORMAT', 'expected one of plain, json'],
    [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', 'expected one of error, warn, info, debug, trace, off'],
    [{ RUST_LOG: 'loud' }, 'RUST_LOG', "got 'loud'"],
    [{ LOCAL_CA_CERT: '/ca.pem' }, 'LOCAL_CA_KEY', 'must be set together'],
    [{ LOCAL_CA_KEY: '/ca.key' }, 'LOCAL_CA_CERT', 'must be set together'],
    [{ ZTUNNEL_OUTBOUND_PORT: '65536' }, 'ZTUNNEL_OUTBOUND_PORT', 'in 0..65535'],
    [{ ZTUNNEL_INBOUND_PORT: 'http' }, 'ZTUNNEL_INBOUND_PORT', 'expected an integer'],
    [{ ZTUNNEL_HBONE_TARGET_PORT: '0' }, 'ZTUNNEL_HBONE_TARGET_PORT', 'in 1..65535'],
    [{ ZTUNNEL_BIND_ADDRESS: '10.0.0.256' }, 'ZTUNNEL_BIND_ADDRESS', "'10.0.0.256' is not an IP address"],
    [{ ZTUNNEL_BIND_ADDRESS: '::', IPV6_ENABLED: 'false' }, 'ZTUNNEL_BIND_ADDRESS', 'IPV6_ENABLED=false'],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: '0.0.0.0' }, 'ZTUNNEL_ADMIN_BIND_ADDRESS', "'0.0.0.0' is not a loopback address"],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: '10.1.2.3' }, 'ZTUNNEL_ADMIN_BIND_ADDRESS', 'admin listens on localhost only'],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: '::' }, 'ZTUNNEL_ADMIN_BIND_ADDRESS', 'is not a loopback address'],
    [{ ZTUNNEL_ADMIN_BIND_ADDRESS: 'localhost' }, 'ZTUNNEL_ADMIN_BIND_ADDRESS', 'is not an IP address'],
  ];
  for (const [env, name, problem] of cases) {
    const err = configError(env);
    t.equal(err.code, 'ZT_ERR_CONFIG_INVALID', JSON.stringify(env));
    t.match(err.message, new RegExp(`^${name}: `), `${JSON.stringify(env)} names ${name}`);
    t.ok(err.message.includes(problem), `${JSON.stringify(env)}: '${err.message}' includes '${problem}'`);
  }
});

t.test('node mode requires NODE_NAME; it is checked after every other variable', async (t) => {
  for (const env of [{}, { PROXY_MODE: 'node' }, { PROXY_MODE: 'shared', NODE_NAME: '' }] as Env[]) {
    let err: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof ZtError, JSON.stringify(env));
    t.match((err as Error).message, /^NODE_NAME: required when PROXY_MODE=node/, JSON.stringify(env));
  }
  // Another bad variable is named first.
  t.throws(() => loadConfig({ PACKET_MARK: 'abc' }), /^PACKET_MARK/);
  // Dedicated mode identifies its workload by PROXY_WORKLOAD_INFO instead.
  t.equal(loadConfig({ PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'a/b/c' }).nodeName, undefined);
});

t.test('dedicated mode requires PROXY_WORKLOAD_INFO', async (t) => {
  const err = configError({ PROXY_MODE: 'dedicated' });
  t.match(err.message, /^PROXY_WORKLOAD_INFO: required when PROXY_MODE=dedicated/);
  t.equal(load({ PROXY_MODE: 'node' }).proxyWorkloadInfo, undefined);
});

t.test('LOCAL_XDS and LOCAL_XDS_PATH are mutually exclusive', async (t) => {
  const err = configError({ LOCAL_XDS_PATH: '/a.yaml', LOCAL_XDS: 'workloads: []' });
  t.match(err.message, /LOCAL_XDS_PATH and LOCAL_XDS are mutually exclusive/);
  // an empty value counts as unset, so it does not conflict
  t.equal(load({ LOCAL_XDS_PATH: '/a.yaml', LOCAL_XDS: '' }).localXdsPath, '/a.yaml');
});

t.test('termination deadline derivation', async (t) => {
  const cases: [Env, number][] = [
    [{}, 5_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '30' }, 25_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '11' }, 6_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '10' }, 9_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '2' }, 1_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '1' }, 1_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '0' }, 1_000],
    [{ TERMINATION_GRACE_PERIOD_SECONDS: '30', CONNECTION_TERMINATION_DEADLINE: '3s' }, 3_000],
  ];
  for (const [env, ms] of cases) {
    t.equal(load(env).connectionTerminationDeadlineMs, ms, JSON.stringify(env));
  }
});

t.test('duration syntax', async (t) => {
  const cases: [string, number | undefined][] = [
    ['5s', 5_000],
    ['250ms', 250],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1h0m1s', 3_601_000],
    ['10', 10_000],
    ['0.25', 250],
    ['1.5s', 1_500],
    [' 2s ', 2_000],
    ['', undefined],
    ['s', undefined],
    ['5', 5_000],
    ['5d', undefined],
    ['-1s', undefined],
    ['1s 2s', undefined],
    ['ms', undefined],
    ['1e3', undefined],
  ];
  for (const [text, ms] of cases) t.equal(parseDurationMs(text), ms, JSON.stringify(text));
});

t.test('ZTUNNEL_WORKER_THREADS: default half the usable cores, 1 to 8; 1..64; bad values named', async (t) => {
  const cores = (await import('node:os')).availableParallelism();
  t.equal(load({}).workerThreads, Math.max(1, Math.min(Math.floor(cores / 2), 8)), 'default: half the cores, 1 to 8');
  t.ok(defaultWorkerThreads() >= 1 && defaultWorkerThreads() <= 8);
  t.equal(load({ ZTUNNEL_WORKER_THREADS: '1' }).workerThreads, 1);
  t.equal(load({ ZTUNNEL_WORKER_THREADS: '4' }).workerThreads, 4);
  t.equal(load({ ZTUNNEL_WORKER_THREADS: String(MAX_WORKER_THREADS) }).workerThreads, MAX_WORKER_THREADS);
  for (const bad of ['0', '-1', '1.5', 'two', String(MAX_WORKER_THREADS + 1)]) {
    const err = configError({ ZTUNNEL_WORKER_THREADS: bad });
    t.match(err.message, /^ZTUNNEL_WORKER_THREADS: /, `${bad} is refused, naming the variable`);
  }
});
