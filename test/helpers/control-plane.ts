// A local control plane (src/control-plane) for tests: TLS with a serving certificate signed
// by the given root, a bearer token in a file, and the environment a ztunnel needs to use it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ControlPlane } from '../../src/control-plane/control-plane.js';
import { issueServingCertificate } from '../../src/control-plane/serving-cert.js';
import type { CertificateAuthority } from '../../src/identity/ca.js';

export interface TestControlPlane {
  cp: ControlPlane;
  port: number;
  dir: string;
  rootPath: string;
  tokenPath: string;
  token: string;
  /** XDS_ADDRESS, XDS_ROOT_CA, AUTH_TOKEN for a ztunnel of this control plane. */
  env: Record<string, string>;
  /** The whole environment of a node's ztunnel fed by it (ztunnel's own pod in istio-system, SA ztunnel), plus `extra`. */
  ztunnelEnv(node: string, extra?: Record<string, string>): Record<string, string>;
  close(): Promise<void>;
}

export async function startTestControlPlane(ca: CertificateAuthority, o: { port?: number; token?: string; maxCertificateTtlMs?: number; log?: string[] } = {}): Promise<TestControlPlane> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-cp-'));
  const { certPath, keyPath } = ca.writeTo(dir);
  const serving = issueServingCertificate(certPath, keyPath, ['localhost', '127.0.0.1']);
  const token = o.token ?? `token-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const tokenPath = path.join(dir, 'istio-token');
  fs.writeFileSync(tokenPath, `${token}\n`);
  const log = o.log;
  const cp = new ControlPlane({
    ca,
    serving,
    tokens: [token],
    ...(o.maxCertificateTtlMs !== undefined ? { maxCertificateTtlMs: o.maxCertificateTtlMs } : {}),
    ...(log ? { log: (level: string, message: string, fields?: Record<string, unknown>) => void log.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`) } : {}),
  });
  const port = await cp.listen('127.0.0.1', o.port ?? 0);
  const env = { XDS_ADDRESS: `127.0.0.1:${port}`, XDS_ROOT_CA: certPath, AUTH_TOKEN: tokenPath };
  return {
    cp,
    port,
    dir,
    rootPath: certPath,
    tokenPath,
    token,
    env,
    ztunnelEnv: (node, extra = {}) => ({ NODE_NAME: node, POD_NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'ztunnel', ...env, ...extra }),
    close: async () => {
      await cp.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
