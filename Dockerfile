# The ztunnel pod image (node mode): `ztunnel-ts` as ENTRYPOINT; the same image runs the
# node agent (`ztunnel-ts node-agent ...`) and the capture rules (`ztunnel-ts redirect ...`).
# Runs as root: the manifests grant only NET_ADMIN / NET_RAW (IP_TRANSPARENT, TPROXY rules).
# test/integration/image.test.ts replays these stages (COPY and RUN lines, ENTRYPOINT,
# HEALTHCHECK) in a temporary directory, since CI has no Docker engine.

# 1. Build: production dependencies from the lockfile (--ignore-scripts: the package's own
#    `prepare` would compile bench/ with devDependencies; koffi's install script, the one that
#    matters, is run by `npm rebuild koffi`), then src/ and native-shims/ compiled by the
#    TypeScript version the lockfile pins (tsconfig.image.json; bench/ and test/ are not even
#    copied). No devDependency enters node_modules; @types/node is there as protobufjs' dependency.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.image.json ./
COPY src ./src
COPY native-shims ./native-shims
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm rebuild koffi \
    && npx --yes --package="typescript@$(node -p "require('./package-lock.json').packages['node_modules/typescript'].version")" \
       -- tsc -p tsconfig.image.json

# 2. The image: node_modules (production), dist/src + dist/native-shims, proto/ (loaded at
#    run time by src/xds/protos.ts). iptables/ipset/iproute2 for `ztunnel-ts redirect`.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iproute2 iptables ipset \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY proto ./proto
COPY package.json ./
ENV LOG_FORMAT=json NODE_ENV=production
EXPOSE 15001 15006 15008 15020 15021
# node:20-bookworm-slim has no curl: node itself asks the readiness port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["node", "-e", "require('http').get({host:'127.0.0.1',port:process.env.ZTUNNEL_READINESS_PORT||15021,path:'/healthz/ready',timeout:2000},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1)).on('timeout',()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/src/main.js"]
