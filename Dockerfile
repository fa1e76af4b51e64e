# syntax=docker/dockerfile:1
# Multi-stage build:
#   docker build --target server -t bpfarm .        # the server, with the clang toolchain
#   docker build --target agent  -t bpfarm-agent .  # the agent, a static binary FROM scratch

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The server uses cgo (SQLite); the agent and the verifier runners (the /init
# of the qemu VMs that verify artifacts, one per target arch) must be static.
RUN CGO_ENABLED=1 go build -trimpath -o /out/bpfarm ./cmd/bpfarm \
 && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/bpfarm-agent ./cmd/bpfarm-agent \
 && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/bpfarm-verifier ./cmd/bpfarm-verifier \
 && CGO_ENABLED=0 GOARCH=arm64 go build -trimpath -ldflags='-s -w' -o /out/bpfarm-verifier-arm64 ./cmd/bpfarm-verifier

FROM debian:bookworm-slim AS server
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang-19 llvm-19 libbpf-dev bpftool bubblewrap linux-libc-dev linux-libc-dev-arm64-cross \
      util-linux ca-certificates qemu-system-x86 qemu-system-arm \
 && rm -rf /var/lib/apt/lists/*
# The server finds the runners next to its own executable.
COPY --from=build /out/bpfarm /out/bpfarm-verifier /out/bpfarm-verifier-arm64 /usr/local/bin/
# It needs no root and no capability: it runs as an unprivileged user.
# bubblewrap sandboxes each compile in a new user namespace, which the
# runtime's default seccomp profile refuses without CAP_SYS_ADMIN: run
# workers with --security-opt seccomp=unconfined --cap-drop ALL (or a seccomp
# profile allowing unshare/clone with namespace flags); see
# deploy/kubernetes/base/worker.yaml. KVM: --device /dev/kvm --group-add
# the device's group.
RUN mkdir -p /var/lib/bpfarm && chown 65532:65532 /var/lib/bpfarm
USER 65532:65532
VOLUME /var/lib/bpfarm
EXPOSE 8080
ENV BPFARM_ADDR=0.0.0.0:8080 BPFARM_DATA=/var/lib/bpfarm
ENTRYPOINT ["/usr/local/bin/bpfarm"]
CMD ["serve"]

FROM scratch AS agent
# The CA certificates, to reach a server over HTTPS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/bpfarm-agent /bpfarm-agent
ENTRYPOINT ["/bpfarm-agent"]
