// `ztunnel-ts control-plane`: serve a local config file to ztunnels and node agents over delta
// xDS, and sign their CSRs, from a root made by `ztunnel-ts ca create`. The file is watched:
// an edit is pushed as a delta (a bad edit is refused and logged; the last good mesh stays).
// Exit 0 on SIGTERM/SIGINT, 1 when it cannot start, 2 on usage errors.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadLocalConfigFile } from '../config/local-config.js';
import { errorMessage } from '../errors.js';
import { CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority } from '../identity/ca.js';
import { parseHostPort } from '../util/ip.js';
import { parseDurationMs } from '../config/duration.js';
import { ControlPlane } from './control-plane.js';
import { issueServingCertificate } from './serving-cert.js';

export const CONTROL_PLANE_USAGE = `usage: ztunnel-ts control-plane --config FILE --ca-dir DIR --token-file FILE
                                [--listen IP:PORT] [--name DNS-or-IP ...] [--cert-ttl DURATION]
Serves FILE's workloads, services and policies over delta xDS (istiod's protocol) and signs
certificate requests with the root in DIR (ca-cert.pem, ca-key.pem from \`ztunnel-ts ca create\`).
Clients must send the token in FILE as a bearer token (ztunnel: AUTH_TOKEN=FILE).
  --listen     default 127.0.0.1:15012
  --name       names in the server certificate (default: localhost and the listen IP)
  --cert-ttl   longest workload certificate lifetime (default 24h)
`;

const err = (s: string): void => void process.stderr.write(s);

export async function runControlPlaneCli(argv: string[]): Promise<number> {
  let values: { config?: string; 'ca-dir'?: string; 'token-file'?: string; listen?: string; name?: string[]; 'cert-ttl'?: string };
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        config: { type: 'string' },
        'ca-dir': { type: 'string' },
        'token-file': { type: 'string' },
        listen: { type: 'string' },
        name: { type: 'string', multiple: true },
        'cert-ttl': { type: 'string' },
      },
    }).values;
  } catch (e) {
    err(`control-plane: ${errorMessage(e)}\n${CONTROL_PLANE_USAGE}`);
    return 2;
  }
  const { config, 'ca-dir': caDir, 'token-file': tokenFile } = values;
  if (config === undefined || caDir === undefined || tokenFile === undefined) {
    err(`control-plane: --config, --ca-dir and --token-file are required\n${CONTROL_PLANE_USAGE}`);
    return 2;
  }
  const listen = parseHostPort(values.listen ?? '127.0.0.1:15012');
  if (listen === undefined) {
    err(`control-plane: --listen must be IP:PORT, got '${values.listen ?? ''}'\n`);
    return 2;
  }
  const ttl = values['cert-ttl'] === undefined ? undefined : parseDurationMs(values['cert-ttl']);
  if (values['cert-ttl'] !== undefined && (ttl === undefined || ttl < 2000)) {
    err(`control-plane: --cert-ttl must be a duration of at least 2s, got '${values['cert-ttl']}'\n`);
    return 2;
  }
  const log = (level: string, message: string, fields?: Record<string, unknown>): void =>
    void process.stdout.write(`${new Date().toISOString()}\t${level}\tcontrol-plane\t${message}${fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : ''}\n`);
  let cp: ControlPlane;
  try {
    const certPath = path.join(caDir, CA_CERT_FILE);
    const keyPath = path.join(caDir, CA_KEY_FILE);
    const ca = CertificateAuthority.fromFiles(certPath, keyPath);
    const token = fs.readFileSync(tokenFile, 'utf8').trim();
    if (token === '') throw new Error(`--token-file ${tokenFile} is empty`);
    const names = values.name ?? ['localhost', listen.host];
    cp = new ControlPlane({
      ca,
      serving: issueServingCertificate(certPath, keyPath, names),
      tokens: [token],
      ...(ttl !== undefined ? { maxCertificateTtlMs: ttl } : {}),
      log,
    });
    cp.setMesh(loadLocalConfigFile(config));
    const port = await cp.listen(listen.host, listen.port);
    log('info', `serving ${config} over delta xDS and the CA on ${listen.host}:${port}`, { names });
  } catch (e) {
    err(`control-plane: cannot start: ${errorMessage(e)}\n`);
    return 1;
  }
  let timer: NodeJS.Timeout | undefined;
  const reload = (): void => {
    try {
      const mesh = loadLocalConfigFile(config);
      cp.setMesh(mesh);
      log('info', 'config reloaded and pushed', { workloads: mesh.workloads.length, services: mesh.services.length, policies: mesh.policies.length });
    } catch (e) {
      log('error', `config reload refused; serving the previous mesh: ${errorMessage(e)}`);
    }
  };
  const watcher = fs.watch(path.dirname(config), (_ev, name) => {
    if (name !== null && name !== path.basename(config)) return;
    clearTimeout(timer);
    timer = setTimeout(reload, 200);
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  watcher.close();
  clearTimeout(timer);
  await cp.close();
  return 0;
}
