CARGO ?= cargo
SEEDS ?= 100000

.PHONY: build test sim
build:
	$(CARGO) build --release

test:
	$(CARGO) test --release

sim:
	RAFTKV_SEEDS=$(SEEDS) $(CARGO) test --release --test sim_sweep -- --ignored --nocapture soak
