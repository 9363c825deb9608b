// Public surface of L4 authorization: build an AuthzConnection once per inbound connection,
// then ask the current PolicyStore. Nothing here does I/O.

export { buildAuthzConnection, findAuthzIdentity, type AuthzConnection, type AuthzIdentity } from './authz-connection.js';
export type { AuthzDecision } from './compiled-policy.js';
export { PolicyStore, type AuthzLog } from './policy-store.js';
