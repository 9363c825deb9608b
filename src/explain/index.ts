// Public surface of `explain`: read a netns's kernel state, get the ztunnels' decisions
// (buildRouteDecision / buildAuthorizeDecision, served by the admin /debug endpoints), then
// explainPath() / buildExplanation() and render them.
export {
  findLink,
  findRoute,
  parseIpsetSave,
  parseIptablesSave,
  parseKernelSnapshot,
  readKernelSnapshot,
  readRawKernelState,
  type IpRoute,
  type IpRule,
  type KernelSnapshot,
  type LinkInfo,
  type RawKernelState,
  type SavedRule,
} from './kernel-snapshot.js';
export {
  buildAuthorizeDecision,
  buildRouteDecision,
  summariseWorkload,
  type AuthorizeDecision,
  type AuthorizeQuery,
  type EndpointSummary,
  type PolicySummary,
  type RouteDecision,
  type RouteQuery,
  type WorkloadSummary,
} from './decision.js';
export { buildExplanation, explainPath, type ExplainInput, type Explanation, type Hop, type HopStep, type PathKind } from './hops.js';
export { formatExplanation, formatExplanationJson } from './render.js';
