// The Prometheus endpoint (15020): /metrics and /stats/prometheus
// serve the registry as Prometheus text, or OpenMetrics when the Accept header asks for
// it; families without samples are left out; gzip/br per Accept-Encoding.
// Must never switch the shared Registry's content type: prom-client renames counters in
// place when rendering OpenMetrics, so OpenMetrics is derived from the text output here.
import type http from 'node:http';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { Registry } from 'prom-client';
import { buildServer, listen, parseTarget, sendText } from './http-server.js';

const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text;charset=utf-8;version=1.0.0';

const gzip = promisify(zlib.gzip);
const brotli = promisify(zlib.brotliCompress);

type Encoding = 'gzip' | 'br';

/** Drops families (blocks of `# HELP`/`# TYPE` lines) that have no sample line. */
function buildFamilies(text: string): string[][] {
  const families: string[][] = [];
  let current: string[] = [];
  let hasSample = false;
  const flush = (): void => {
    if (hasSample) families.push(current);
    current = [];
    hasSample = false;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ') && current.length > 0) flush();
    current.push(line);
    if (!line.startsWith('#')) hasSample = true;
  }
  flush();
  return families;
}

export function buildPrometheusText(text: string): string {
  return buildFamilies(text)
    .map((f) => f.join('\n') + '\n')
    .join('');
}

/** OpenMetrics: counter families are named without `_total`, samples with it; `# EOF`. */
export function buildOpenMetricsText(text: string): string {
  let out = '';
  for (const family of buildFamilies(text)) {
    const type = family.find((l) => l.startsWith('# TYPE '));
    const [, , name = '', kind = ''] = type?.split(' ') ?? [];
    if (kind !== 'counter') {
      out += family.join('\n') + '\n';
      continue;
    }
    const base = name.endsWith('_total') ? name.slice(0, -'_total'.length) : name;
    for (const line of family) {
      if (line.startsWith('# HELP ')) out += `# HELP ${base} ${line.slice(7 + name.length + 1)}\n`;
      else if (line.startsWith('# TYPE ')) out += `# TYPE ${base} counter\n`;
      else if (line.startsWith(name + '{') || line.startsWith(name + ' ')) {
        out += (name === base ? base + '_total' : name) + line.slice(name.length) + '\n';
      } else out += line + '\n';
    }
  }
  return out + '# EOF\n';
}

/** The first supported coding the client lists with a non-zero q. */
export function findEncoding(header: string | undefined): Encoding | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(',')) {
    const [coding = '', ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (q !== undefined && Number(q.slice(2)) === 0) continue;
    if (coding === 'gzip' || coding === 'br') return coding;
  }
  return undefined;
}

/**
 * `registry`: serve this prom-client registry; or `metrics`: the Prometheus text from elsewhere
 * (the main thread's registry summed with the data-path worker threads').
 */
export function startStatsServer(o: { host: string; port: number } & ({ registry: Registry } | { metrics: () => Promise<string> })): Promise<http.Server> {
  const render = 'registry' in o ? () => o.registry.metrics() : o.metrics;
  const server = buildServer(async (req, res) => {
    const path = parseTarget(req).pathname;
    if (path !== '/metrics' && path !== '/stats/prometheus') {
      sendText(res, 404, 'not found\n');
      return;
    }
    const raw = await render();
    const openMetrics = (req.headers.accept ?? '').includes('application/openmetrics-text');
    const body = openMetrics ? buildOpenMetricsText(raw) : buildPrometheusText(raw);
    const headers: http.OutgoingHttpHeaders = {
      'content-type': openMetrics ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE,
      vary: 'Accept, Accept-Encoding',
    };
    const encoding = findEncoding(req.headers['accept-encoding']);
    let payload: Buffer = Buffer.from(body);
    if (encoding !== undefined) {
      payload = encoding === 'gzip' ? await gzip(payload) : await brotli(payload);
      headers['content-encoding'] = encoding;
    }
    headers['content-length'] = payload.length;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : payload);
  });
  return listen(server, o.host, o.port);
}
