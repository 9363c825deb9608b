// Root-only, end to end: the seed's node-level capture path with two real ztunnel-ts
// processes fed by the local config file (the suite itself: test/helpers/kernel-path-suite.ts).
import t from 'tap';
import { runKernelPathSuite } from '../helpers/kernel-path-suite.js';

runKernelPathSuite(t, { stem: 'kp' });
