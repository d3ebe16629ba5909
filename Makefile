# brokerd — the two commands README gives users: `make run` and `make test`.
SWIFT ?= swift
SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build release run install uninstall test soak fuzz tsan asan bench bench-smoke bench-check bench-thresholds clean

# Installs what a fresh Debian machine lacks: pkg-config and liblz4's headers, and the openssl binary the TLS tests
# use to make throwaway certificates.
deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists liblz4; then \
		echo "installing liblz4-dev and pkg-config"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq liblz4-dev pkg-config; \
	fi
	@if ! command -v openssl >/dev/null 2>&1; then \
		echo "installing openssl"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openssl; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product brokerd
	$(SWIFT) build -c release --product brokerctl

# Starts brokerd on the embedded default config (127.0.0.1:7420, data in ./brokerd-data).
run: release
	./.build/release/brokerd

# Installs the release binaries, shell completions and the deployment examples under $(DESTDIR)$(PREFIX):
#   bin/brokerd, bin/brokerctl
#   share/bash-completion/completions/{brokerd,brokerctl}, share/zsh/site-functions/_{brokerd,brokerctl},
#   share/fish/vendor_completions.d/{brokerd,brokerctl}.fish
#   share/doc/brokerd/{brokerd.service,closed-loop.toml} (copy the unit to /etc/systemd/system yourself; see
#   docs/OPERATIONS.md)
PREFIX ?= /usr/local
INSTALL ?= install
BINARIES := brokerd brokerctl
install: release
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d \
		$(DESTDIR)$(PREFIX)/share/doc/brokerd
	@for b in $(BINARIES); do \
		$(INSTALL) -m 0755 .build/release/$$b $(DESTDIR)$(PREFIX)/bin/$$b || exit 1; \
		./.build/release/$$b --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b || exit 1; \
		./.build/release/$$b --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$b || exit 1; \
		./.build/release/$$b --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish || exit 1; \
	done
	$(INSTALL) -m 0644 docs/deploy/brokerd.service docs/examples/closed-loop.toml $(DESTDIR)$(PREFIX)/share/doc/brokerd/
	@echo "installed brokerd and brokerctl in $(DESTDIR)$(PREFIX)/bin"

uninstall:
	@for b in $(BINARIES); do \
		rm -f $(DESTDIR)$(PREFIX)/bin/$$b $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b \
			$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$b $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish; \
	done
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/brokerd

# The connection-flood test runs in a test process of its own (see ConnectionFloodTests.swift for why).
test: deps
	$(SWIFT) test
	BROKERD_FLOOD=1 $(SWIFT) test --skip-build --filter ConnectionFloodTests

# Crash consistency: brokerd (release) SIGKILLed at random moments under load, SOAK_CYCLES times, then checked
# (make test runs 3 cycles of the same tool on the debug build). Add SOAK_ARGS="--seed N" to repeat a run.
SOAK_CYCLES ?= 100
soak: deps
	$(SWIFT) build -c release --product brokerd
	$(SWIFT) build -c release --product brokersoak
	./.build/release/brokersoak --cycles $(SOAK_CYCLES) $(SOAK_ARGS)

# libFuzzer: each harness runs FUZZ_SECONDS on the committed seed corpus (new inputs go to .build-fuzz/corpus).
# Leak detection is off: TOMLKit 0.6.0 never frees a parsed document (a few hundred bytes per parse).
FUZZ_SECONDS ?= 60
# SwiftPM passes --sanitize fuzzer and --sanitize address to swiftc as two -sanitize= flags, and the last one wins:
# the code would get ASan but no coverage counters, and libFuzzer would mutate blind. One combined flag after them
# instruments every module for both (check: the fuzzer's "Loaded ... inline 8-bit counters" count is in the tens of
# thousands, and "corp:" grows).
FUZZ_FLAGS := -Xswiftc -sanitize=fuzzer,address
FUZZERS := FuzzFrames FuzzConfig FuzzBatch
fuzz: deps
	@for f in $(FUZZERS); do \
		$(SWIFT) build --scratch-path .build-fuzz --product $$f --sanitize fuzzer --sanitize address $(FUZZ_FLAGS) || exit 1; \
		mkdir -p .build-fuzz/corpus/$$f; \
		echo "== $$f for $(FUZZ_SECONDS) s"; \
		SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 .build-fuzz/debug/$$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
			-timeout=10 .build-fuzz/corpus/$$f Fuzz/corpus/$$f || exit 1; \
	done

# The whole suite under the thread sanitizer and under the address sanitizer.
# make tsan: shared state sits behind Locking.Locked, a pthread mutex TSan sees (Synchronization.Mutex locks with a
# futex TSan cannot see). `-Xlinker --export-dynamic` lets the Swift runtime find TSan's __tsan_acquire/release (its
# __tsan_on_initialize hook looks them up with dlsym), so the hand-offs of Swift concurrency — a continuation resumed
# on one thread, its task running on in another — are visible; without it TSan reports every such hand-off as a race.
# Tests run one at a time (--no-parallel): under TSan, on 2 cores, the whole suite at once starves timing-bound tests
# (a live subscription's 20 s wait, connects) and they fail for want of CPU, not for a race. .tsan-suppressions holds
# the one report that is the runtime's, with its reason; any other report fails the run (halt_on_error would hide the
# rest, so the log is searched instead). CI runs this target.
TSAN_FLAGS := --sanitize thread -Xlinker --export-dynamic
tsan: deps
	BROKERD_FLOOD=1 TSAN_OPTIONS="suppressions=$(CURDIR)/.tsan-suppressions" $(SWIFT) test --scratch-path .build-tsan \
		$(TSAN_FLAGS) --no-parallel 2>&1 | tee .build-tsan.log; \
	status=$${PIPESTATUS[0]}; \
	if grep -q "WARNING: ThreadSanitizer" .build-tsan.log; then echo "ThreadSanitizer reported races (see .build-tsan.log)"; exit 1; fi; \
	exit $$status

# make asan: .asan-suppressions holds one report inside Foundation's Process.run(), with its reason.
asan: deps
	ASAN_OPTIONS="detect_leaks=0:suppressions=$(CURDIR)/.asan-suppressions" $(SWIFT) test --scratch-path .build-asan \
		--sanitize address

# Micro-benchmarks (package-benchmark, in the separate package Benchmarks/; docs/BENCHMARKS.md). `bench-smoke` runs
# each benchmark for 2 iterations to prove they all build and work; `bench` runs them fully (about a minute after the
# build) and prints wall clock, throughput and malloc counts. `bench-check` gates the malloc counts only, against
# Benchmarks/Thresholds/ (refresh those with `bench-thresholds` after an intended change). Wall clock is never gated.
# It also runs five short brokerbench scenarios, four on an embedded broker (2 s of durable-publish, 1 s of
# e2e-latency at 5,000 records/s, 1 s of sync-latency, 1 s of each of policy-overhead's three parts) and 1 s of
# pipelined-single on a spawned brokerd, then `brokerbench sweep` (1 s of e2e-latency at 2,000 and at 5,000 records/s,
# embedded), and summarizes them with Benchmarks/scripts/summarize.py --check, which
# fails if one counted an error or an undelivered record, measured no record (in any of policy-overhead's parts),
# or (spawned) read no publish stage from brokerd's metrics or no run-queue wait of its threads, or e2e-latency's
# timelines (arrivals, acknowledgements) do not count every measured record, so the load generator and that script
# cannot rot either; its --table (the docs' Figures column) runs on them too. CI
# (.ci/run) runs bench-smoke after make test; it gates on nothing measured in seconds.
bench-smoke: deps
	cd Benchmarks && BROKERD_BENCH_SMOKE=1 $(SWIFT) package benchmark --no-progress
	$(SWIFT) build --product brokerbench
	$(SWIFT) build --product brokerd
	mkdir -p .build/bench-smoke
	./.build/debug/brokerbench run durable-publish --embedded --duration 2 --warmup 0.5 \
		--output .build/bench-smoke/durable-publish-1.json --plot .build/bench-smoke/durable-publish-1.svg
	./.build/debug/brokerbench run e2e-latency --embedded --rate 5000 --duration 1 --warmup 0.5 --floor-seconds 1 \
		--output .build/bench-smoke/e2e-latency-1.json --plot .build/bench-smoke/e2e-latency-1.svg
	./.build/debug/brokerbench run sync-latency --embedded --duration 1 --warmup 0.5 \
		--output .build/bench-smoke/sync-latency-1.json --plot .build/bench-smoke/sync-latency-1.svg
	./.build/debug/brokerbench run pipelined-single --spawn --duration 1 --warmup 0.5 \
		--output .build/bench-smoke/pipelined-single-1.json --plot .build/bench-smoke/pipelined-single-1.svg
	./.build/debug/brokerbench run policy-overhead --embedded --duration 1 --warmup 0.5 \
		--output .build/bench-smoke/policy-overhead-1.json --plot .build/bench-smoke/policy-overhead-1.svg
	python3 Benchmarks/scripts/summarize.py .build/bench-smoke --check
	./.build/debug/brokerbench sweep --embedded --rates 2000,5000 --runs 1 --duration 1 --warmup 0.5 \
		--output-dir .build/bench-smoke/sweep
	python3 Benchmarks/scripts/summarize.py .build/bench-smoke/sweep --check
	python3 Benchmarks/scripts/summarize.py .build/bench-smoke --table smoke > .build/bench-smoke/figures.md

bench: deps
	cd Benchmarks && $(SWIFT) package benchmark --no-progress

bench-check: deps
	cd Benchmarks && $(SWIFT) package benchmark thresholds check --metric mallocCountTotal \
		--path $(CURDIR)/Benchmarks/Thresholds --no-progress

bench-thresholds: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark thresholds update \
		--metric mallocCountTotal --path $(CURDIR)/Benchmarks/Thresholds --no-progress

clean:
	rm -rf .build .build-fuzz .build-tsan .build-asan Benchmarks/.build

