// A mesh root from CertificateAuthority and a server certificate for localhost/127.0.0.1 that
// it signs (made with openssl: our CA issues SPIFFE-only workload certificates, while a gRPC
// client checks the server's DNS/IP name), for fake istiod servers in the tests.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CertificateAuthority } from '../../src/identity/ca.js';

export interface ServerPki {
  ca: string;
  cert: string;
  key: string;
  /** The root itself, to sign CSRs with (a fake istiod CA). */
  authority: CertificateAuthority;
}

export function makeServerPki(dir: string, name: string): ServerPki {
  const d = path.join(dir, name);
  fs.mkdirSync(d, { recursive: true });
  const authority = CertificateAuthority.generate({ commonName: `test ${name} root` });
  const { certPath, keyPath } = authority.writeTo(d);
  const f = (n: string): string => path.join(d, n);
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  run(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', f('server.key')]);
  run(['req', '-new', '-key', f('server.key'), '-subj', '/CN=localhost', '-out', f('server.csr')]);
  run(['x509', '-req', '-in', f('server.csr'), '-CA', certPath, '-CAkey', keyPath, '-CAcreateserial', '-days', '2', '-extfile', f('ext.cnf'), '-out', f('server.pem')]);
  return { ca: fs.readFileSync(certPath, 'utf8'), cert: fs.readFileSync(f('server.pem'), 'utf8'), key: fs.readFileSync(f('server.key'), 'utf8'), authority };
}
