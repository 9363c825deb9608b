// The admin layer's public surface: admin (15000), stats (15020) and readiness (15021)
// servers, and the helpers the composition root needs to close them.
export { startAdminServer, type AdminOptions } from './admin-server.js';
export { parseAuthorizeQuery, parseRouteQuery, type DebugAuthorizeQuery, type DebugOptions, type DebugRouteQuery } from './debug.js';
export { redactSecrets, isSecretKeyName } from './config-dump.js';
export { closeServer, isLoopbackHost } from './http-server.js';
export { Readiness, startReadinessServer } from './readiness.js';
export { startStatsServer } from './stats-server.js';
