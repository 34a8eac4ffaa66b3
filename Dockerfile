# mcp-edge container image.
#
#   docker build -t mcp-edge .
#   docker run -p 8787:8787 -p 127.0.0.1:8788:8788 -v mcp-edge-data:/data --read-only \
#     -e MCP_EDGE_ADMIN_TOKEN="$(openssl rand -hex 32)" mcp-edge
#
# docs/operations.md walks through running it alone, with compose and on Kubernetes.
#
# mcp-edge is TypeScript run by Node 24's type stripping: there is no compile step, the image runs
# the sources with the base image's Node. BASE must be a Debian-based Node 24 image with npm (the
# official node:24-slim, or a mirror of it); the build fetches the production dependencies from the
# npm registry, exactly as package-lock.json pins them.
ARG BASE=node:24-slim

# ---- dependencies: production only (no test tools, no pinned dev Node) ------------------------------
FROM ${BASE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no production dependency needs an install script, and none may run one here.
# Behind a TLS-intercepting proxy, pass its CA bundle as a build secret:
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf /root/.npm

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${BASE}
# One fixed numeric user (not root, and not the base image's `node`): Kubernetes' runAsNonRoot can
# check a numeric USER without a runAsUser of its own.
RUN groupadd --system --gid 10001 mcp-edge \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin mcp-edge \
 && mkdir -p /data \
 && chown 10001:10001 /data \
 && chmod 0700 /data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY bin ./bin
COPY schema ./schema
COPY src ./src
COPY deploy/container/mcp-edge.yaml /etc/mcp-edge/mcp-edge.yaml

# Everything the edge writes goes under /data (the SQLite store, its WAL, the audit spool); the root
# filesystem can be mounted read-only. HOME points there too, for stdio servers that keep a cache.
ENV NODE_ENV=production \
    HOME=/data \
    MCP_EDGE_HEALTHCHECK_URL=http://127.0.0.1:8787/healthz
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8787 8788

# Liveness of the process, on the public listener (no curl in the image: Node's fetch). Set
# MCP_EDGE_HEALTHCHECK_URL when your config listens elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.MCP_EDGE_HEALTHCHECK_URL).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Node is PID 1, started directly (exec form, no shell in between), so SIGTERM reaches the edge,
# which drains and exits (a second signal stops at once). `docker run --init` adds a reaper for
# stdio servers that leave orphaned grandchildren behind.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/bin/mcp-edge.js"]
CMD ["serve", "-c", "/etc/mcp-edge/mcp-edge.yaml"]
