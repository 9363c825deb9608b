// The admin server's debug endpoints, for `ztunnel-ts explain`: ztunnel's own decisions for
// one connection, as JSON, from the same functions the data path runs.
//   GET /debug/route?src=IP&dst=IP:PORT                  → the outbound decision
//   GET /debug/authorize?src=IP&dst=IP:PORT[&identity=spiffe://…] → the inbound authorization
// (`dst` of authorize is the target, after service-port translation; no identity = plaintext.)
// This module parses and validates the query and answers; what is decided comes from the
// callbacks the composition root gives (buildRouteDecision / buildAuthorizeDecision over the
// current mesh state and PolicyStore), so admin depends on nothing above it.
// Must never: call a callback with an unvalidated query (a bad one is a 400 naming the
// parameter), or answer anything but GET/HEAD. Served on the loopback-only admin port.
import type http from 'node:http';
import net from 'node:net';
import { ZtError, errorMessage } from '../errors.js';
import { sendText } from './http-server.js';

export interface DebugAddress {
  ip: string;
  port: number;
}

export interface DebugRouteQuery {
  src: string;
  dst: DebugAddress;
}

export interface DebugAuthorizeQuery {
  src: string;
  dst: DebugAddress;
  /** `spiffe://…` of the (verified) peer; undefined for a plaintext client. */
  identity: string | undefined;
}

export interface DebugOptions {
  /** JSON-able answer of /debug/route. A thrown ZtError is a 400 with its message. */
  route: (q: DebugRouteQuery) => unknown;
  authorize: (q: DebugAuthorizeQuery) => unknown;
}

export const DEBUG_ENDPOINTS: ReadonlyArray<readonly [string, string]> = [
  ['/debug/route', 'GET ?src=IP&dst=IP:PORT: the outbound decision for this connection (JSON)'],
  ['/debug/authorize', 'GET ?src=IP&dst=IP:PORT[&identity=spiffe://...]: the authorization decision at this ztunnel (JSON)'],
];

const ROUTE_USAGE = 'usage: GET /debug/route?src=<ip>&dst=<ip>:<port>\n';
const AUTHORIZE_USAGE = 'usage: GET /debug/authorize?src=<ip>&dst=<ip>:<port>[&identity=spiffe://<td>/ns/<ns>/sa/<sa>]\n';

/** IPv4/IPv6 text, v4-mapped v6 as v4; undefined when not an IP. */
export function parseDebugIp(text: string): string | undefined {
  const v = net.isIP(text);
  if (v === 4) return text;
  if (v === 6) {
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
    return m?.[1] ?? text.toLowerCase();
  }
  return undefined;
}

/** `1.2.3.4:80` or `[fd00::1]:80`, port 1–65535. */
export function parseDebugAddress(text: string): DebugAddress | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const ip = parseDebugIp(m[1]!);
  const port = Number(m[2]);
  if (ip === undefined || port < 1 || port > 65535) return undefined;
  return { ip, port };
}

type Parsed<T> = { ok: true; query: T } | { ok: false; message: string };

function readParams(url: URL, allowed: readonly string[]): Parsed<Map<string, string>> {
  const params = new Map<string, string>();
  for (const [key, value] of url.searchParams) {
    if (!allowed.includes(key)) return { ok: false, message: `unknown parameter ${JSON.stringify(key)}` };
    if (params.has(key)) return { ok: false, message: `parameter ${key} given twice` };
    params.set(key, value);
  }
  return { ok: true, query: params };
}

function readSrcDst(params: Map<string, string>): Parsed<{ src: string; dst: DebugAddress }> {
  const srcText = params.get('src');
  const dstText = params.get('dst');
  if (srcText === undefined) return { ok: false, message: 'missing parameter src' };
  if (dstText === undefined) return { ok: false, message: 'missing parameter dst' };
  const src = parseDebugIp(srcText);
  if (src === undefined) return { ok: false, message: `src: ${JSON.stringify(srcText)} is not an IP address` };
  const dst = parseDebugAddress(dstText);
  if (dst === undefined) return { ok: false, message: `dst: ${JSON.stringify(dstText)} is not IP:PORT` };
  return { ok: true, query: { src, dst } };
}

export function parseRouteQuery(url: URL): Parsed<DebugRouteQuery> {
  const p = readParams(url, ['src', 'dst']);
  if (!p.ok) return p;
  return readSrcDst(p.query);
}

export function parseAuthorizeQuery(url: URL): Parsed<DebugAuthorizeQuery> {
  const p = readParams(url, ['src', 'dst', 'identity']);
  if (!p.ok) return p;
  const sd = readSrcDst(p.query);
  if (!sd.ok) return sd;
  const identity = p.query.get('identity');
  if (identity !== undefined && !/^spiffe:\/\/[^/\s]+\/ns\/[^/\s]+\/sa\/[^/\s]+$/.test(identity)) {
    return { ok: false, message: `identity: ${JSON.stringify(identity)} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>` };
  }
  return { ok: true, query: { ...sd.query, identity } };
}

function answer<T>(method: string, res: http.ServerResponse, parsed: Parsed<T>, usage: string, decide: (q: T) => unknown): void {
  if (method !== 'GET' && method !== 'HEAD') {
    sendText(res, 405, `method not allowed\n${usage}`, { allow: 'GET' });
    return;
  }
  if (!parsed.ok) {
    sendText(res, 400, `${parsed.message}\n${usage}`);
    return;
  }
  let body: unknown;
  try {
    body = decide(parsed.query);
  } catch (err) {
    // An expected refusal of the query (e.g. not served here): the caller's problem, not ours.
    if (err instanceof ZtError) {
      sendText(res, 400, `${errorMessage(err)}\n`);
      return;
    }
    throw err;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(method === 'HEAD' ? undefined : JSON.stringify(body, null, 2) + '\n');
}

/** Answers a /debug/* request; false when the path is not a debug endpoint. */
export function handleDebugRequest(url: URL, method: string, debug: DebugOptions, res: http.ServerResponse): boolean {
  switch (url.pathname) {
    case '/debug/route':
      answer(method, res, parseRouteQuery(url), ROUTE_USAGE, debug.route);
      return true;
    case '/debug/authorize':
      answer(method, res, parseAuthorizeQuery(url), AUTHORIZE_USAGE, debug.authorize);
      return true;
    default:
      return false;
  }
}
