# brokerd — the two commands README gives users: `make run` and `make test`.
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build release run test clean

# Installs what a fresh Debian machine lacks: pkg-config and liblz4's headers.
deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists liblz4; then \
		echo "installing liblz4-dev and pkg-config"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq liblz4-dev pkg-config; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product brokerd
	$(SWIFT) build -c release --product brokerctl

# Starts brokerd on the embedded default config (127.0.0.1:7420, data in ./brokerd-data).
run: release
	./.build/release/brokerd

test: deps
	$(SWIFT) test

clean:
	rm -rf .build
