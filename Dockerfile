# syntax=docker/dockerfile:1
# The engine's images, built from this repository. Debian (bookworm) on purpose: the Temporal
# SDK's native module is built against glibc and does not load on Alpine (musl).
#   control-worker: the control worker (`docker compose up` builds and runs it)
#   host-agent:     the host agent for a compute host, with virsh and swtpm (docs/deployment.md)

FROM node:20.19-bookworm-slim AS build
WORKDIR /opt/vtpm
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json index.ts config.ts ./
COPY domain domain
COPY activities activities
COPY workflows workflows
COPY workers workers
COPY client client
COPY scripts scripts
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20.19-bookworm-slim AS control-worker
ENV NODE_ENV=production \
    VTPM_DATA_DIR=/var/lib/vtpm
WORKDIR /opt/vtpm
COPY --from=build /opt/vtpm/package.json ./
COPY --from=build /opt/vtpm/node_modules node_modules
COPY --from=build /opt/vtpm/dist dist
RUN mkdir -p /var/lib/vtpm && chown node:node /var/lib/vtpm
USER node
CMD ["node", "dist/workers/control-worker-main.js"]

FROM control-worker AS host-agent
USER root
# virsh for libvirt (through the socket mounted from the host), swtpm for the state health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-clients swtpm swtpm-tools \
 && rm -rf /var/lib/apt/lists/*
ENV VTPM_DATA_DIR=/var/lib/vtpm-agent
ENTRYPOINT ["node", "dist/workers/host-agent-main.js"]
CMD []
