# bpfarm — build, run, test and benchmark.
#
#   make run    start the server on the embedded default (SQLite + ./data)
#   make test   install what the tests need, then run every test
#   make bench  run the benchmarks and write BENCHMARKS.md
#
# Downloads and tools are cached outside the repository, under $(CACHE).

GO        ?= go
CACHE     ?= $(HOME)/.cache/bpfarm
MINIO     := $(CACHE)/bin/minio
BIN       := bin
# Packages the server needs to compile BPF (make run).
APT_RUN   := clang-19 llvm-19 libbpf-dev bpftool bubblewrap linux-libc-dev linux-libc-dev-arm64-cross util-linux
# Packages only the tests need (qemu-system-arm provides qemu-system-aarch64,
# which boots the real Debian arm64 kernels the tests download).
APT_TEST  := $(APT_RUN) qemu-system-x86 qemu-system-arm cpio chromium systemtap-sdt-dev gcc postgresql
ADDR      ?= 127.0.0.1:8080
DATA      ?= ./data

export BPFARM_MINIO := $(MINIO)

.PHONY: all deps deps-run deps-arm64 deps-minio deps-libbpf build run test test-short fuzz bench fmt vet clean

all: build

# apt-install only the packages that are missing (idempotent, needs root).
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps-run:
	$(call apt_install,$(APT_RUN))

deps: deps-run deps-minio deps-arm64 deps-libbpf
	$(call apt_install,$(APT_TEST))

# The tests download real Debian arm64 kernel packages
# (apt-get download linux-image-...-cloud-arm64-unsigned:arm64): dpkg must
# know the arm64 architecture, and apt its package lists.
deps-arm64:
	@dpkg --print-foreign-architectures | grep -qx arm64 || { \
	  echo "dpkg --add-architecture arm64"; \
	  dpkg --add-architecture arm64 && apt-get update -qq; }

# Real newer libbpf headers for the header-set tests: libbpf's own repository,
# served by the Go module proxy (checksum-checked), copied into $(CACHE).
LIBBPF_VERSION := v1.5.0
LIBBPF_HEADERS := bpf.h libbpf.h btf.h libbpf_common.h libbpf_legacy.h bpf_helpers.h bpf_helper_defs.h \
	bpf_tracing.h bpf_endian.h bpf_core_read.h skel_internal.h libbpf_version.h usdt.bpf.h
deps-libbpf: $(CACHE)/libbpf-$(LIBBPF_VERSION)/usdt.bpf.h
$(CACHE)/libbpf-$(LIBBPF_VERSION)/usdt.bpf.h:
	@mkdir -p $(CACHE)/libbpf-$(LIBBPF_VERSION).tmp
	src=$$(cd /tmp && GOFLAGS=-mod=mod $(GO) mod download -json github.com/libbpf/libbpf@$(LIBBPF_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') && \
	  for h in $(LIBBPF_HEADERS); do cp $$src/src/$$h $(CACHE)/libbpf-$(LIBBPF_VERSION).tmp/ || exit 1; done
	chmod 755 $(CACHE)/libbpf-$(LIBBPF_VERSION).tmp
	rm -rf $(CACHE)/libbpf-$(LIBBPF_VERSION) && mv $(CACHE)/libbpf-$(LIBBPF_VERSION).tmp $(CACHE)/libbpf-$(LIBBPF_VERSION)

# A real MinIO for the S3 tests, built once from the Go module proxy
# (pinned release tags are refused by the proxy, hence @latest).
deps-minio: $(MINIO)
$(MINIO):
	@mkdir -p $(CACHE)/bin
	@echo "building MinIO into $(CACHE)/bin (once; takes a few minutes)"
	cd /tmp && GOBIN=$(CACHE)/bin GOFLAGS=-buildvcs=false $(GO) install github.com/minio/minio@latest

build:
	CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/bpfarm ./cmd/bpfarm
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/bpfarm-agent ./cmd/bpfarm-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/bpfarm-verifier ./cmd/bpfarm-verifier
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/bpfarm-verifier-arm64 ./cmd/bpfarm-verifier

run: deps-run build
	$(BIN)/bpfarm serve --addr $(ADDR) --data $(DATA)

# BPFARM_TEST_STRICT=1: a missing tool fails a test instead of skipping it.
# Fuzz targets where users' bytes reach parsers, each for a bounded time,
# from the corpus checked in under testdata/fuzz (seeded from real objects;
# anything the fuzzer finds lands there too and is checked in).
FUZZTIME ?= 8s
# The seeds are whole objects (tens of KiB): minimizing each new input for
# the default 60 s would take the whole budget, so minimize briefly.
FUZZMIN  ?= 1s
FUZZ      := ./btf/core:FuzzRelocate ./btf/core:FuzzMinimizedBTF ./bpfsrc/inspect:FuzzInspect \
             ./bpfsrc/elfstrip:FuzzStripDebug ./client/decode:FuzzJSON

test: deps build
	BPFARM_TEST_STRICT=1 $(GO) test -count=1 -timeout 60m ./...
	$(MAKE) fuzz

fuzz:
	@for t in $(FUZZ); do \
	  pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
	  BPFARM_TEST_STRICT=1 $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMIN) $$pkg || exit 1; \
	done

test-short:
	$(GO) test -short -count=1 ./...

bench: deps build
	$(GO) run ./internal/benchreport -o BENCHMARKS.md

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
