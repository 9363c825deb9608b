# The ztunnel pod image. Runs as root with CAP_NET_ADMIN (IP_TRANSPARENT, TPROXY rules).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY native-shims ./native-shims
COPY proto ./proto
COPY bench ./bench
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iproute2 iptables ipset \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/proto ./proto
COPY package.json ./
ENV LOG_FORMAT=json
EXPOSE 15001 15006 15008 15020 15021
ENTRYPOINT ["node", "dist/src/main.js"]
