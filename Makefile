# Makefile - builds libkfac (static and shared), the kfac program, the tests
# and the benchmarks. `make run` and `make test` install missing Debian
# packages first (apt-get, only when something is missing).

CC      ?= gcc
# Build directory (helpers working side by side may pass their own).
B       ?= build
# OpenBLAS's OpenMP build, linked by path so that BLAS and our OpenMP regions
# share one libgomp thread pool whatever the BLAS alternative points to.
BLASDIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS  ?= -O3 -g
override CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L -fno-math-errno -Wall -Wextra -Wshadow -Wstrict-prototypes \
           -fopenmp -fPIC -Iinclude -Isrc
LDLIBS  := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -lz -lm -fopenmp

# Debian packages the build needs; `deps` installs the missing ones.
DEB_PKGS := libopenblas-openmp-dev zlib1g-dev check pkg-config dataset-fashion-mnist

SONAME  := libkfac.so.0
LIB_SRC := $(wildcard src/*.c)
LIB_OBJ := $(LIB_SRC:src/%.c=$(B)/obj/%.o)
CLI_SRC := $(wildcard src/cli/*.c)
CLI_OBJ := $(CLI_SRC:src/cli/%.c=$(B)/obj/cli/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_OBJ := $(TEST_SRC:tests/%.c=$(B)/obj/tests/%.o)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(B)/%)

NET   ?= nets/fmnist-mlp.net
DATA  ?= /usr/share/datasets/fashion-mnist

.PHONY: all deps run test bench clean
all: $(B)/libkfac.a $(B)/libkfac.so $(B)/kfac

deps:
	@missing=""; for p in $(DEB_PKGS) $(EXTRA_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing missing packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(B)/obj/%.o: src/%.c include/kfac.h $(wildcard src/*.h) | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj/cli/%.o: src/cli/%.c include/kfac.h $(wildcard src/cli/*.h) | $(B)/obj/cli
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj/tests/%.o: tests/%.c include/kfac.h tests/tests.h $(wildcard src/*.h) | $(B)/obj/tests
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj $(B)/obj/cli $(B)/obj/tests:
	mkdir -p $@

$(B)/libkfac.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^
$(B)/libkfac.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LDLIBS)
$(B)/kfac: $(CLI_OBJ) $(B)/libkfac.a
	$(CC) -o $@ $(CLI_OBJ) $(B)/libkfac.a $(LDLIBS)

# The test runner links the static library (tests may reach private
# headers) and Check.
$(B)/kfac_tests: $(TEST_OBJ) $(B)/libkfac.a
	$(CC) -o $@ $(TEST_OBJ) $(B)/libkfac.a $(LDLIBS) $$(pkg-config --libs check)

$(B)/%: bench/%.c $(B)/libkfac.a
	$(CC) $(CFLAGS) -o $@ $< $(B)/libkfac.a $(LDLIBS)

# The main job: train the default network on the default data with K-FAC
# and with SGD-momentum, then print them side by side.
run: deps
	$(MAKE) all
	$(B)/kfac compare $(NET) --data $(DATA) --optimizers kfac,momentum

test: deps
	$(MAKE) $(B)/kfac_tests $(B)/kfac
	cd $(B) && KFAC_DATA=$(DATA) KFAC_ROOT=$(CURDIR) ./kfac_tests

# Throughput benchmarks (bench/README.md); run on an otherwise idle machine.
bench: deps
	$(MAKE) $(BENCH_BIN)
	for b in $(BENCH_BIN); do $$b || exit 1; done

clean:
	rm -rf $(B)
