# raftkv — build, test, and a three-node cluster on this machine.
#
#   make cluster     build, start 3 nodes in the background, wait for a leader
#                    (the first time it also writes cluster.json, with a random cluster
#                    name, and the cluster secret $(DATA)/secret that every node is
#                    started with: --secret-file)
#   make repl        interactive client on that cluster
#   make status      every node's view of the cluster
#   make kill-leader SIGKILL the current leader (watch a failover)
#   make restart 2   restart node 2 (also: make restart N=2)
#   make stop        stop the nodes this Makefile started (by pid file)
#   make clean       stop, then remove data, logs, the secret and cluster.json
#   make run         the 3 nodes in the foreground, coloured logs, Ctrl-C stops all
#                    (TRACE=1: every node with --trace, each request's path on stderr)
#   make test        every test (unit, simulation, real processes)
#   make golden      rewrite the golden scripts' output (tests/scripts); review the diff
#   make sim         long simulation soak (SEEDS=100000 by default)
#   make sim-hostile long soak of the hostile sweep, both modes (SEEDS=100000 by default)
#   make bench       the benchmark table of docs/benchmarks.md against `make cluster`
#   make test-browser the dashboard in headless Chromium (installs chromium and
#                    chromium-driver with apt-get when missing); writes docs/dashboard.png

CARGO   ?= cargo
SEEDS   ?= 100000
BIN     ?= target/release/raftkv
CLUSTER ?= cluster.json
DATA    ?= cluster-data
NODES   := 1 2 3
# Extra `raftkv node` flags for every node, e.g. NODE_ARGS="--snapshot-entries 50"
NODE_ARGS ?=
# TRACE=1 starts every node with --trace (make run, make cluster: then in the logs)
TRACE ?=
TRACE_ARGS := $(if $(TRACE),--trace)
# The cluster secret: peers must prove they know it (docs/protocol.md, the peer handshake)
SECRET  ?= $(DATA)/secret
RAFT_BASE   ?= 7000
CLIENT_BASE ?= 8000
HTTP_BASE   ?= 9000
# `make restart 2` as well as `make restart N=2`
N ?= $(word 2,$(MAKECMDGOALS))

.PHONY: build test test-browser golden sim sim-hostile cluster repl status stop clean run kill-leader restart bench fmt lint

build:
	$(CARGO) build --release

test:
	$(CARGO) test --release

# The browser test skips itself without Chromium; here it is installed first (Debian's
# packages), so the test really runs, and it writes the README's screenshot.
test-browser:
	@if [ ! -x /usr/bin/chromium ] || ! command -v chromedriver >/dev/null; then \
	  sudo=''; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  $$sudo apt-get update && $$sudo apt-get install -y chromium chromium-driver || exit 1; \
	fi
	RAFTKV_SCREENSHOT=docs/dashboard.png $(CARGO) test --release --test browser -- --nocapture

sim:
	RAFTKV_SEEDS=$(SEEDS) $(CARGO) test --release --test sim_sweep -- --ignored --nocapture soak

sim-hostile:
	RAFTKV_SEEDS=$(SEEDS) $(CARGO) test --release --test sim_hostile -- --ignored --nocapture soak

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# A random name keeps two clusters made here apart: a node refuses another
# cluster's data directory, and peers refuse another cluster's handshake.
$(CLUSTER):
	@printf '{\n  "cluster": "raftkv-%s",\n  "nodes": [\n' \
	  "$$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" > $@
	@for i in $(NODES); do \
	  sep=','; [ $$i = 3 ] && sep=''; \
	  printf '    { "id": %d, "raft": "127.0.0.1:%d", "client": "127.0.0.1:%d", "http": "127.0.0.1:%d" }%s\n' \
	    $$i $$(($(RAFT_BASE)+$$i)) $$(($(CLIENT_BASE)+$$i)) $$(($(HTTP_BASE)+$$i)) "$$sep" >> $@; \
	done
	@printf '  ]\n}\n' >> $@
	@echo "wrote $@"

# 32 random bytes as hex, created readable only by its owner (umask 077).
$(SECRET):
	@mkdir -p $(dir $@)
	@(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > $@; echo >> $@)
	@echo "wrote $@ (the cluster secret, readable only by you)"

# Shell snippet: starts node $$i in the background unless its pid file names a live process.
START_NODE = mkdir -p $(DATA); \
	if [ -f $(DATA)/n$$i.pid ] && kill -0 $$(cat $(DATA)/n$$i.pid) 2>/dev/null; then \
	  echo "n$$i already running (pid $$(cat $(DATA)/n$$i.pid))"; \
	else \
	  ulimit -n $$(ulimit -Hn) 2>/dev/null; \
	  nohup $(BIN) node --id $$i --cluster $(CLUSTER) --data-dir $(DATA)/n$$i \
	    --secret-file $(SECRET) $(NODE_ARGS) $(TRACE_ARGS) \
	    >>$(DATA)/n$$i.log 2>&1 < /dev/null & echo $$! > $(DATA)/n$$i.pid; \
	  echo "started n$$i (pid $$(cat $(DATA)/n$$i.pid)), log $(DATA)/n$$i.log"; \
	fi

cluster: build $(CLUSTER) $(SECRET)
	@for i in $(NODES); do $(START_NODE); done
	@echo "waiting for a leader..."
	@for t in $$(seq 1 100); do \
	  if $(BIN) status --cluster $(CLUSTER) --json 2>/dev/null | grep -q '"role":"leader"'; then \
	    $(BIN) status --cluster $(CLUSTER); \
	    echo; echo "cluster is up. Try:  make repl   or   $(BIN) put greeting hello --cluster $(CLUSTER)"; \
	    h=localhost:$$(($(HTTP_BASE)+1)); f=localhost:$$(($(HTTP_BASE)+2)); \
	    echo "or HTTP, on any node:  curl -X PUT $$h/v1/kv/greeting -d hello"; \
	    echo "                       curl $$f/v1/kv/greeting"; \
	    echo "                       curl -X POST $$f/append -d '{\"key\":\"greeting\",\"value\":\" world\"}'"; \
	    echo "                       curl $$h/v1/status"; \
	    echo "the dashboard, live:   http://$$h/"; \
	    exit 0; \
	  fi; sleep 0.2; \
	done; \
	echo "no leader elected within 20 s; last log lines:"; \
	for i in $(NODES); do echo "--- n$$i"; tail -n 5 $(DATA)/n$$i.log; done; exit 1

repl: $(CLUSTER)
	@$(BIN) repl --cluster $(CLUSTER)

status: $(CLUSTER)
	@$(BIN) status --cluster $(CLUSTER)

stop:
	@for i in $(NODES); do \
	  f=$(DATA)/n$$i.pid; \
	  if [ -f $$f ]; then \
	    pid=$$(cat $$f); \
	    if kill -TERM $$pid 2>/dev/null; then \
	      for t in $$(seq 1 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	      kill -0 $$pid 2>/dev/null && kill -KILL $$pid; \
	      echo "stopped n$$i (pid $$pid)"; \
	    fi; \
	    rm -f $$f; \
	  fi; \
	done

clean: stop
	rm -rf $(DATA) $(CLUSTER) $(SECRET)

kill-leader: $(CLUSTER)
	@leader=$$($(BIN) status --cluster $(CLUSTER) --json 2>/dev/null | grep '"role":"leader"' \
	  | sed -E 's/.*"node":([0-9]+).*/\1/' | head -n 1); \
	if [ -z "$$leader" ]; then echo "no leader right now"; exit 1; fi; \
	pid=$$(cat $(DATA)/n$$leader.pid 2>/dev/null); \
	if [ -z "$$pid" ]; then echo "n$$leader was not started by make cluster"; exit 1; fi; \
	kill -KILL $$pid && rm -f $(DATA)/n$$leader.pid && echo "killed leader n$$leader (pid $$pid) with SIGKILL; restart it with: make restart $$leader"

restart: build $(CLUSTER) $(SECRET)
	@case "$(N)" in 1|2|3) ;; *) echo "usage: make restart N   (N = 1, 2 or 3)"; exit 2;; esac
	@f=$(DATA)/n$(N).pid; if [ -f $$f ] && kill -0 $$(cat $$f) 2>/dev/null; then \
	  kill -TERM $$(cat $$f); while kill -0 $$(cat $$f) 2>/dev/null; do sleep 0.1; done; rm -f $$f; fi
	@i=$(N); $(START_NODE)

# Lets `make restart 2` treat "2" as an argument rather than a target.
ifneq ($(filter restart,$(MAKECMDGOALS)),)
$(N):
	@:
endif

# Ctrl-C reaches every process of the terminal's group: the nodes shut down cleanly, while
# the shell and the prefixing seds ignore it and finish once the nodes' output ends.
run: build $(CLUSTER) $(SECRET)
	@mkdir -p $(DATA)
	@trap '' INT TERM; \
	for i in $(NODES); do \
	  color=$$((30 + $$i)); \
	  ( trap - INT TERM; exec $(BIN) node --id $$i --cluster $(CLUSTER) --data-dir $(DATA)/n$$i \
	      --secret-file $(SECRET) $(NODE_ARGS) $(TRACE_ARGS) ) 2>&1 \
	    | sed -u "s/^/$$(printf '\033[%sm' $$color)[n$$i]$$(printf '\033[0m') /" & \
	done; \
	wait

bench: build $(CLUSTER)
	@for c in 1 16 64 256; do \
	  echo "== $$c clients"; \
	  $(BIN) bench --cluster $(CLUSTER) --clients $$c --duration 10 --value-size 100 --mix put=100; \
	done
	@for c in 64; do \
	  echo "== $$c clients, linearizable gets"; \
	  $(BIN) bench --cluster $(CLUSTER) --clients $$c --duration 10 --value-size 100 --mix get=100; \
	done

# Rewrites the expected output of tests/scripts/*.txt; review the diff before committing.
golden:
	RAFTKV_GOLDEN=rewrite $(CARGO) test --release --test golden -- --nocapture
