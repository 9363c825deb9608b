// The admin server (15000): an index page, /config_dump (redacted,
// pretty JSON), /logging (read or change the log level at run time), /quitquitquit
// (graceful shutdown) and, when given, /debug/route and /debug/authorize (debug.ts).
// Loopback only: it can change behaviour and stop the process.
// Must never print key material (see config-dump.ts) and never start on a non-loopback
// address.
import type http from 'node:http';
import { ZtError, errorMessage } from '../errors.js';
import type { Telemetry } from '../record/telemetry.js';
import { redactSecrets } from './config-dump.js';
import { DEBUG_ENDPOINTS, handleDebugRequest, type DebugOptions } from './debug.js';
import { buildServer, isLoopbackHost, listen, parseTarget, sendText } from './http-server.js';

export interface AdminOptions {
  /** must be loopback */
  host: string;
  port: number;
  configDump: () => unknown;
  telemetry: Telemetry;
  onQuit: () => Promise<void>;
  /** /debug/route and /debug/authorize (for `ztunnel-ts explain`); absent = 404. */
  debug?: DebugOptions | undefined;
}

const ENDPOINTS: ReadonlyArray<readonly [string, string]> = [
  ['/config_dump', 'dump the current ztunnel state and configuration (JSON)'],
  ['/logging', 'POST: read or change the log level (?level=<level>, ?reset)'],
  ['/quitquitquit', 'POST: shut down the server gracefully'],
];

const LOGGING_USAGE =
  'usage: POST /logging[?level=<level>][&reset]\n' +
  '  <level> is one of: error, warn, info, debug, trace, off\n' +
  '  no query: print the current level; reset: go back to the start-up level\n';

function buildIndexPage(debug: boolean): string {
  const rows = [...ENDPOINTS, ...(debug ? DEBUG_ENDPOINTS : [])].map(([path, help]) => `<li><a href="${path}">${path}</a>: ${help}</li>`).join('\n');
  return `<!DOCTYPE html>\n<html><head><title>ztunnel admin</title></head><body>\n<h1>ztunnel admin</h1>\n<ul>\n${rows}\n</ul>\n</body></html>\n`;
}

function handleLogging(url: URL, method: string, telemetry: Telemetry, res: http.ServerResponse): void {
  const reset = url.searchParams.has('reset');
  const level = url.searchParams.get('level');
  const wantsChange = reset || level !== null;
  if (method !== 'POST' && (method !== 'GET' || wantsChange)) {
    sendText(res, 405, `changing the log level needs POST\n${LOGGING_USAGE}`, { allow: 'POST, GET' });
    return;
  }
  for (const key of url.searchParams.keys()) {
    if (key !== 'level' && key !== 'reset') {
      sendText(res, 400, `unknown parameter ${JSON.stringify(key)}\n${LOGGING_USAGE}`);
      return;
    }
  }
  const previous = telemetry.getLogLevel();
  try {
    if (reset) telemetry.setLogLevel(telemetry.getInitialLogLevel());
    if (level !== null) telemetry.setLogLevel(level);
  } catch (err) {
    telemetry.setLogLevel(previous);
    sendText(res, 400, `${errorMessage(err)}\n${LOGGING_USAGE}`);
    return;
  }
  if (wantsChange) telemetry.log.info({ scope: 'admin', level_from: previous, level_to: telemetry.getLogLevel() }, 'log level changed');
  sendText(res, 200, `current log level is ${telemetry.getLogLevel()}\n`);
}

export async function startAdminServer(o: AdminOptions): Promise<http.Server> {
  if (!isLoopbackHost(o.host)) {
    throw new ZtError('ZT_ERR_CONFIG_INVALID', `admin server must bind a loopback address, not ${o.host}`);
  }
  let quitting = false;
  const server = buildServer(async (req, res) => {
    const url = parseTarget(req);
    const method = req.method ?? 'GET';
    switch (url.pathname) {
      case '/':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(buildIndexPage(o.debug !== undefined));
        return;
      case '/config_dump': {
        // Redact before anything is written, so a refused dump is a clean 500.
        const dump = redactSecrets(await o.configDump());
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(dump, null, 2) + '\n');
        return;
      }
      case '/logging':
        handleLogging(url, method, o.telemetry, res);
        return;
      case '/quitquitquit':
        if (method !== 'POST') {
          sendText(res, 405, 'method not allowed\n', { allow: 'POST' });
          return;
        }
        // Answer first: the shutdown closes this very server.
        res.once('finish', () => {
          if (quitting) return;
          quitting = true;
          o.onQuit().catch((err: unknown) => {
            o.telemetry.log.error({ scope: 'admin', error: errorMessage(err) }, 'shutdown failed');
          });
        });
        sendText(res, 200, 'shutdown now\n', { connection: 'close' });
        return;
      default:
        if (o.debug !== undefined && handleDebugRequest(url, method, o.debug, res)) return;
        sendText(res, 404, 'not found\n');
    }
  });
  return listen(server, o.host, o.port);
}
