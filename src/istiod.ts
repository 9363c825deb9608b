// The pieces of a connection to istiod that the xDS stream and the CA client share, kept free
// of gRPC so that a ztunnel running from a local file never loads it: the root (XDS_ROOT_CA /
// CA_ROOT_CA: a file, inline PEM or the OS roots), the bearer token (re-read on every use),
// ztunnel's own identity, and the node id and metadata upstream sends
// (https://github.com/istio/ztunnel/blob/master/src/xds/client.rs).

import fs from 'node:fs';
import tls from 'node:tls';
import type { Config, JsonValue, RootCaSource, TokenSource } from './config/types.js';
import { ZtError, errorMessage } from './errors.js';
import { DEFAULTS } from './config/env.js';

const DEFAULT_ROOT_CA_PATH = DEFAULTS.rootCaPath;

/** PEM roots from a RootCaSource; names the variable and file when it cannot be read. */
export function readRootCa(src: RootCaSource, variable: string): string {
  switch (src.kind) {
    case 'pem':
      return src.pem;
    case 'system':
      return tls.rootCertificates.join('\n');
    case 'file':
      try {
        const pem = fs.readFileSync(src.path, 'utf8');
        if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
        return pem;
      } catch (err) {
        // The default path is where a pod mounts istio-ca-root-cert; elsewhere, say how to go on.
        const hint = src.path === DEFAULT_ROOT_CA_PATH ? ' (ztunnel-ts talks to istiod because no LOCAL_XDS_PATH/LOCAL_XDS is set: set XDS_ROOT_CA to istiod\'s root, or run from a local config file)' : '';
        throw new ZtError('ZT_ERR_CONFIG_INVALID', `${variable}: cannot read the root certificate ${src.path}: ${errorMessage(err)}${hint}`, { cause: err });
      }
  }
}

/** A token reader: the file re-read on every call (the projected token rotates); missing = none. */
export function tokenReader(src: TokenSource, onMissing: (message: string) => void): () => string | undefined {
  if (src.kind === 'literal') return () => src.value;
  let warned = false;
  return () => {
    try {
      const t = fs.readFileSync(src.path, 'utf8').trim();
      warned = false;
      return t === '' ? undefined : t;
    } catch (err) {
      if (!warned) onMissing(`AUTH_TOKEN: cannot read ${src.path} (${errorMessage(err)}); connecting without a bearer token`);
      warned = true;
      return undefined;
    }
  };
}

/** ztunnel's own SPIFFE identity (POD_NAMESPACE + SERVICE_ACCOUNT), when known. */
export function ownIdentity(config: Config): string | undefined {
  const { podNamespace, serviceAccount } = config.self;
  if (podNamespace === undefined || serviceAccount === undefined) return undefined;
  return `spiffe://${config.trustDomain}/ns/${podNamespace}/sa/${serviceAccount}`;
}

/** Upstream's node id `ztunnel~IP~POD.NS~NS.svc.cluster.local` and its metadata. */
export function xdsNode(config: Config): { id: string; metadata: { [key: string]: JsonValue } } {
  const { podName, podNamespace, instanceIp } = config.self;
  const ip = instanceIp ?? '1.1.1.1';
  const ns = podNamespace ?? '';
  const metadata: { [key: string]: JsonValue } = { ...config.proxyMetadata };
  if (podName !== undefined) metadata['NAME'] = podName;
  if (podNamespace !== undefined) metadata['NAMESPACE'] = podNamespace;
  if (instanceIp !== undefined) metadata['INSTANCE_IPS'] = instanceIp;
  if (config.nodeName !== undefined) metadata['NODE_NAME'] = config.nodeName;
  metadata['CLUSTER_ID'] = config.clusterId;
  return { id: `ztunnel~${ip}~${podName ?? ''}.${ns}~${ns}.svc.cluster.local`, metadata };
}


/** The readiness task names, one per xDS type: pending until that type's first response is applied. */
export const XDS_READINESS_TASKS: Readonly<Record<string, string>> = {
  'type.googleapis.com/istio.workload.Address': 'xds: workloads and services',
  'type.googleapis.com/istio.security.Authorization': 'xds: authorization policies',
};
