# Makefile - builds libkfac (static and shared), the kfac program, the tests
# and the benchmarks. `make run` and `make test` install missing Debian
# packages first (apt-get, only when something is missing).

CC      ?= gcc
# Build directory (helpers working side by side may pass their own).
B       ?= build
# `make MPI=1`: the MPI build (data-parallel training, README "Running on a
# cluster"), compiled with Open MPI's mpicc into its own directory (B with
# -mpi appended), so the two builds never share objects. Debian's Open MPI
# is installed first when missing.
MPI_PKGS := libopenmpi-dev openmpi-bin
ifeq ($(MPI),1)
override B := $(patsubst %-mpi,%,$(B))-mpi
CC      := mpicc
EXTRA_PKGS += $(MPI_PKGS)
MPI_DEPS := deps
endif
# BLAS and LAPACK: OpenBLAS's OpenMP build, so that BLAS and our OpenMP
# regions share one libgomp thread pool. Found with pkg-config in that
# build's own directory (the default openblas.pc is whichever build the
# alternatives system picked), and linked with an rpath to it. Evaluated
# again by the sub-make that compiles, after `deps` installed pkg-config.
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo $$(uname -m)-linux-gnu)
BLAS_PC   := PKG_CONFIG_PATH=/usr/lib/$(MULTIARCH)/openblas-openmp/pkgconfig pkg-config
BLASDIR   := $(patsubst %/,%,$(shell $(BLAS_PC) --variable=libdir openblas 2>/dev/null))
BLAS_CFLAGS := $(shell $(BLAS_PC) --cflags openblas 2>/dev/null)
BLAS_LIBS := $(shell $(BLAS_PC) --libs openblas zlib 2>/dev/null)
CFLAGS  ?= -O3 -g
# The fuzzing build leaves OpenMP out (its pragmas are then ignored).
OPENMP  ?= -fopenmp
override CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L -fno-math-errno -Wall -Wextra -Wshadow -Wstrict-prototypes \
           $(OPENMP) -fPIC -Iinclude -Isrc $(BLAS_CFLAGS)
# Only the functions the public headers (include/) mark KFAC_API leave the
# shared library.
override CFLAGS += -fvisibility=hidden
ifeq ($(MPI),1)
override CFLAGS += -DKFAC_MPI
endif
LDLIBS  := $(BLAS_LIBS) -Wl,-rpath,$(BLASDIR) -lm $(OPENMP)
LDFLAGS ?=

# Debian packages the build needs; `deps` installs the missing ones.
DEB_PKGS := libopenblas-openmp-dev zlib1g-dev check pkg-config dataset-fashion-mnist python3 python3-numpy python3-torch

# The library version, from the header (one place to change it).
version_part = $(shell sed -n 's/^\#define KFAC_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' include/kfac_core.h)
VERSION := $(call version_part,MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)
SONAME  := libkfac.so.$(call version_part,MAJOR)
# Where `make install` puts things (DESTDIR for staged installs).
PREFIX  ?= /usr/local
DESTDIR ?=
# the public headers: kfac.h includes the core and the training layer
PUBLIC_H := include/kfac.h include/kfac_core.h include/kfac_train.h include/kfac_handles.h
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

# the man page is built with the program (not by default in the MPI build)
MANPAGE := $(if $(filter 1,$(MPI)),,$(B)/kfac.1)

.PHONY: all deps run test check-graph check-python check-sanitize check-valgrind fuzz fuzz-build fuzz-seeds bench clean install uninstall embed-test \
        mpi-test bench-mpi bench-torch
all: $(B)/libkfac.a $(B)/libkfac.so $(B)/kfac $(MANPAGE)

deps:
	@missing=""; for p in $(DEB_PKGS) $(EXTRA_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing missing packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(B)/obj/%.o: src/%.c $(PUBLIC_H) $(wildcard src/*.h) | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj/cli/%.o: src/cli/%.c $(PUBLIC_H) $(wildcard src/cli/*.h) | $(B)/obj/cli
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj/tests/%.o: tests/%.c $(PUBLIC_H) tests/tests.h $(wildcard src/*.h src/cli/*.h) | $(B)/obj/tests
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj $(B)/obj/cli $(B)/obj/tests: | $(MPI_DEPS)
	mkdir -p $@

$(B)/libkfac.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^
$(B)/libkfac.so: $(B)/libkfac.so.$(VERSION)
	ln -sf libkfac.so.$(VERSION) $(B)/$(SONAME) && ln -sf $(SONAME) $@
$(B)/libkfac.so.$(VERSION): $(LIB_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LDLIBS)
$(B)/kfac: $(CLI_OBJ) $(B)/libkfac.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(B)/libkfac.a $(LDLIBS)

# The man page kfac(1), from the program's help texts (tools/manpage.py),
# so it names exactly the flags the program takes. The MPI build's program
# would start MPI to print its help: it installs the page without
# building it by default (make MPI=1 install makes it, with the
# environment mpi-test uses).
$(B)/kfac.1: $(B)/kfac tools/manpage.py
	env $(MPI_RUN_ENV) /usr/bin/python3 tools/manpage.py $(B)/kfac > $@.tmp && mv $@.tmp $@

# The test runner links the static library (tests may reach private
# headers) and Check.
# (and the kfac program's progress line, which test_signals.c checks)
$(B)/kfac_tests: $(TEST_OBJ) $(B)/libkfac.a $(B)/obj/cli/progress.o
	$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(B)/obj/cli/progress.o $(B)/libkfac.a $(LDLIBS) $$(pkg-config --libs check)

$(B)/%: bench/%.c $(B)/libkfac.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libkfac.a $(LDLIBS)

# The main job: train the default network on the default data with K-FAC
# and with SGD-momentum, then print them side by side.
run: deps
	$(MAKE) all
	$(B)/kfac compare $(NET) --data $(DATA) --optimizers kfac,momentum

test: deps
	$(MAKE) $(B)/kfac_tests $(B)/kfac $(B)/libkfac.so
	cd $(B) && KFAC_DATA=$(DATA) KFAC_ROOT=$(CURDIR) KFAC_BIN=$$PWD/kfac ./kfac_tests
	$(MAKE) --no-print-directory check-graph
	$(MAKE) --no-print-directory check-python

# The Python package (python/kfac) with Python's unittest, on this build's
# libkfac.so, against this build's kfac program and precond_steps (the
# plain C API's reference run of the preconditioner), with Debian's
# python3, python3-numpy and python3-torch (`deps`; kfac.torch's tests
# are skipped, saying why, where torch cannot be imported).
check-python: $(B)/libkfac.so $(B)/kfac $(B)/precond_steps
	cd python && KFAC_LIBRARY=$(CURDIR)/$(B)/libkfac.so KFAC_BIN=$(CURDIR)/$(B)/kfac \
	  KFAC_PRECOND_STEPS=$(CURDIR)/$(B)/precond_steps KFAC_ROOT=$(CURDIR) \
	  /usr/bin/python3 -m unittest discover -s tests $(if $(V),-v)
$(B)/precond_steps: tests/precond_steps.c $(B)/libkfac.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libkfac.a $(LDLIBS)

# The library's modules (src/*.c and .h) and their dependencies, includes
# and calls (nm on the objects): no circle allowed (tools/depgraph.py).
# `tools/depgraph.py build/obj --dot | dot -Tsvg` draws it.
check-graph: $(LIB_OBJ)
	/usr/bin/python3 tools/depgraph.py --self-test
	/usr/bin/python3 tools/depgraph.py $(B)/obj

# The test suite again, built in $(B)-san with AddressSanitizer and
# UndefinedBehaviorSanitizer (LeakSanitizer included): any report fails the
# test it happens in. The embedding examples are built with the same flags,
# so the sanitizer runtime comes first in every program.
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_ENV   := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1:max_allocation_size_mb=1024 \
             UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86 \
             KFAC_TEST_NO_MEMCAP=1
# Then the Python tests on the sanitized library, its runtimes loaded first
# into python3 (leaks not checked there: the interpreter keeps its own).
check-sanitize: deps
	$(MAKE) B=$(B)-san CFLAGS="-O1 -g $(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" $(B)-san/kfac_tests $(B)-san/kfac $(B)-san/libkfac.so \
	  $(B)-san/precond_steps
	cd $(B)-san && $(SAN_ENV) EMBED_FLAGS="$(SAN_FLAGS)" KFAC_DATA=$(DATA) KFAC_ROOT=$(CURDIR) KFAC_BIN=$$PWD/kfac ./kfac_tests
	cd python && LD_PRELOAD="$$($(CC) -print-file-name=libasan.so):$$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:exitcode=86 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86 \
	  KFAC_LIBRARY=$(CURDIR)/$(B)-san/libkfac.so KFAC_BIN=$(CURDIR)/$(B)-san/kfac \
	  KFAC_PRECOND_STEPS=$(CURDIR)/$(B)-san/precond_steps KFAC_ROOT=$(CURDIR) /usr/bin/python3 -m unittest discover -s tests

# The test suite under valgrind's memcheck, the kfac program it runs
# included (through a wrapper as KFAC_BIN): any error or definite/indirect
# leak fails the test it happens in. Test cases tagged "training" (whole
# training runs on the real data, 20-50x slower under valgrind) are left
# out: they exercise no code path the rest does not, and ASan covers them.
# So are those tagged "fpenv": valgrind ignores MXCSR's flush-to-zero and
# rounding modes, which they check. The kfac program runs itself again once
# to bound OpenMP's spin-waiting (src/cli/main.c), so valgrind follows
# that exec (--trace-children).
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --show-leak-kinds=definite,indirect
check-valgrind: deps
	$(MAKE) deps EXTRA_PKGS=valgrind
	$(MAKE) $(B)/kfac_tests $(B)/kfac $(B)/libkfac.so
	printf '#!/bin/sh\nexec $(VALGRIND) --trace-children=yes "%s/kfac" "$$@"\n' "$$(cd $(B) && pwd)" > $(B)/kfac-valgrind
	chmod +x $(B)/kfac-valgrind
	cd $(B) && CK_EXCLUDE_TAGS="training fpenv" CK_TIMEOUT_MULTIPLIER=10 KFAC_TEST_NO_MEMCAP=1 KFAC_DATA=$(DATA) KFAC_ROOT=$(CURDIR) \
	  KFAC_BIN=$$PWD/kfac-valgrind $(VALGRIND) ./kfac_tests

# libFuzzer harnesses (tests/fuzz/) for the IDX reader, the net-file parser,
# the checkpoint loaders and the trainer on hand-built datasets and data
# orders, built with clang in $(B)-fuzz with ASan and UBSan and run
# FUZZ_SECONDS each from the seed corpora in tests/fuzz/corpus/ (new
# inputs go to $(B)-fuzz/corpus/). Inputs that once
# crashed, tests/fuzz/regressions/<harness>/, are replayed first. A crash
# leaves $(B)-fuzz/crash-<harness>-* and fails the target; the executions
# per harness go to $(B)-fuzz/summary.txt.
FUZZERS      := idx netfile checkpoint trainer
FUZZ_SECONDS ?= 60
FZ           := $(B)-fuzz
FUZZ_CC      := clang-14
FUZZ_FLAGS   := -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
                -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
FUZZ_RUN     := -malloc_limit_mb=512 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1
$(FZ)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FZ)/libkfac.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -D_GNU_SOURCE -fsanitize=fuzzer -Iinclude -o $@ $< $(FZ)/libkfac.a $(LDLIBS)
fuzz-build: deps
	$(MAKE) deps EXTRA_PKGS="clang-14 libclang-rt-14-dev"
	$(MAKE) B=$(FZ) FZ=$(FZ) CC=$(FUZZ_CC) OPENMP= CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -Wno-source-uses-openmp" \
	  $(FZ)/libkfac.a $(FUZZERS:%=$(FZ)/fuzz_%)
fuzz: fuzz-build
	@set -e; : > $(FZ)/summary.txt; for f in $(FUZZERS); do \
	  mkdir -p $(FZ)/corpus/$$f; \
	  if ls tests/fuzz/regressions/$$f/* >/dev/null 2>&1; then \
	    echo "fuzz_$$f: replaying $$(ls tests/fuzz/regressions/$$f | wc -l) regression inputs"; \
	    OPENBLAS_NUM_THREADS=1 $(FZ)/fuzz_$$f $(FUZZ_RUN) tests/fuzz/regressions/$$f/* 2>$(FZ)/regress-$$f.log || \
	      { tail -40 $(FZ)/regress-$$f.log; exit 1; }; \
	  fi; \
	  echo "fuzz_$$f: $(FUZZ_SECONDS) s"; \
	  OPENBLAS_NUM_THREADS=1 $(FZ)/fuzz_$$f $(FUZZ_RUN) -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FZ)/crash-$$f- $(FZ)/corpus/$$f tests/fuzz/corpus/$$f 2>$(FZ)/fuzz-$$f.log || \
	    { tail -60 $(FZ)/fuzz-$$f.log; exit 1; }; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FZ)/fuzz-$$f.log); \
	  cov=$$(grep -o 'cov: [0-9]*' $(FZ)/fuzz-$$f.log | tail -1); \
	  echo "fuzz_$$f: $$execs executions in $(FUZZ_SECONDS) s, $$cov, corpus $$(ls $(FZ)/corpus/$$f | wc -l) new inputs, no crash" \
	    | tee -a $(FZ)/summary.txt; \
	done
# Rewrite the generated seed corpora (the nets, valid IDX pairs, valid
# checkpoints of the harness's trainers).
fuzz-seeds: fuzz-build
	mkdir -p $(FUZZERS:%=tests/fuzz/corpus/%)
	cp nets/*.net tests/fuzz/corpus/netfile/
	KFAC_FUZZ_SEEDS=tests/fuzz/corpus/idx $(FZ)/fuzz_idx
	KFAC_FUZZ_SEEDS=tests/fuzz/corpus/checkpoint $(FZ)/fuzz_checkpoint
	KFAC_FUZZ_SEEDS=tests/fuzz/corpus/trainer $(FZ)/fuzz_trainer

# The benchmark suite (bench/README.md), on an otherwise idle machine:
# throughput, then time-to-target runs with charts and a results table.
# `make bench` (about 28 minutes on 2 cores for the MLP and the
# autoencoder, plus the CNN's part, about 25 minutes, and K-FAC's
# inversion modes, about 20) rewrites
# bench/RESULTS.md and bench/results/; `make bench QUICK=1` (about 6
# minutes) writes to $(B)/bench-quick/ only.
# The CNN (nets/fmnist-cnn, issue 15): its epoch against PyTorch's
# (bench/bench_cnn.py, /usr/bin/python3 with python3-torch, which `deps`
# installs) and its time-to-target runs in bench_suite. Knobs: CNN=0 leaves
# it out; CNN_GRID=1 one point of each optimizer's grid (half the runs);
# CNN_EPOCHS=N its epoch budget (default 3); CNN_TIMING_EPOCHS=N the
# interleaved epochs of each row against PyTorch (default 2).
BENCH_OUT     = $(if $(QUICK),$(B)/bench-quick,bench/results)
BENCH_RESULTS = $(if $(QUICK),$(BENCH_OUT)/RESULTS.md,bench/RESULTS.md)
BENCH_EPOCHS  = $(if $(QUICK),1,3)
BENCH_CNN     = $(if $(filter 0,$(CNN)),,1)
bench: deps
	$(MAKE) deps EXTRA_PKGS=gnuplot-nox
	$(MAKE) $(BENCH_BIN) $(if $(BENCH_CNN),$(B)/libkfac.so)
	mkdir -p $(BENCH_OUT)
	$(B)/bench_epoch $(NET) $(DATA) $(BENCH_EPOCHS) | tee $(BENCH_OUT)/throughput.txt
	$(B)/bench_kfac $(NET) $(DATA) $(BENCH_EPOCHS) | tee $(BENCH_OUT)/kfac-breakdown.txt
	$(if $(BENCH_CNN),KFAC_LIBRARY=$(CURDIR)/$(B)/libkfac.so /usr/bin/python3 bench/bench_cnn.py --data $(DATA) \
	  $(if $(QUICK),--quick) $(if $(CNN_TIMING_EPOCHS),--epochs $(CNN_TIMING_EPOCHS)) --out $(BENCH_OUT)/cnn-torch.txt)
	$(B)/bench_suite $(if $(QUICK),--quick) --out $(BENCH_OUT) --results $(BENCH_RESULTS) --data $(DATA) \
	  --include $(BENCH_OUT)/throughput.txt --include $(BENCH_OUT)/kfac-breakdown.txt \
	  $(if $(BENCH_CNN),--include $(BENCH_OUT)/cnn-torch.txt $(if $(CNN_GRID),--cnn-grid $(CNN_GRID)) \
	    $(if $(CNN_EPOCHS),--cnn-epochs $(CNN_EPOCHS)),--cnn-epochs 0)

# kfac.torch.KFAC against KFAC-Pytorch's KFACOptimizer and the C trainer's
# K-FAC epoch on fmnist-mlp (bench/bench_torch.py, bench/README.md), on an
# otherwise idle machine; not part of `make bench` nor of `make test`.
# KFAC_PYTORCH_DIR names a clone of KFAC-Pytorch (without it, its row is
# skipped, saying so). EPOCHS=N for other than 3 epochs a row, THREADS=N
# for other than 2 threads; QUICK=1: a smoke test of a few seconds. The
# report goes to $(BENCH_OUT)/torch.txt (bench/results/, or
# $(B)/bench-quick/ with QUICK=1).
bench-torch: deps
	$(MAKE) --no-print-directory $(B)/libkfac.so
	mkdir -p $(BENCH_OUT)
	KFAC_LIBRARY=$(CURDIR)/$(B)/libkfac.so /usr/bin/python3 bench/bench_torch.py --net $(NET) --data $(DATA) \
	  $(if $(QUICK),--quick) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(THREADS),--threads $(THREADS)) \
	  --out $(BENCH_OUT)/torch.txt

clean:
	rm -rf $(B)

# Install the headers, both libraries (the shared one versioned, with its
# SONAME link), kfac.pc, the program, its man page and the nets. kfac.pc's Libs link a
# program against the shared library (with an rpath, for prefixes outside
# the loader's path); Libs.private hold what a static link also needs.
INSTALL_LIB := $(DESTDIR)$(PREFIX)/lib
INSTALL_NETS := $(DESTDIR)$(PREFIX)/share/kfac/nets
INSTALL_MAN := $(DESTDIR)$(PREFIX)/share/man/man1
# The Python package goes where Debian's python3 looks under the prefix
# (/usr/local/lib/python3.X/dist-packages is on its path; another prefix's
# directory is printed, for PYTHONPATH), with _install.py naming the
# installed library so that it is found without the loader's path.
PY_VER := $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PY_REL := lib/python$(PY_VER)/dist-packages
INSTALL_PY := $(DESTDIR)$(PREFIX)/$(PY_REL)/kfac
PY_SRC := $(wildcard python/kfac/*.py)
install: all $(B)/kfac.1
	install -d $(DESTDIR)$(PREFIX)/include $(INSTALL_LIB)/pkgconfig $(DESTDIR)$(PREFIX)/bin $(INSTALL_NETS) $(INSTALL_MAN)
	install -m 644 $(PUBLIC_H) $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(B)/libkfac.a $(INSTALL_LIB)/
	install -m 755 $(B)/libkfac.so.$(VERSION) $(INSTALL_LIB)/
	ln -sf libkfac.so.$(VERSION) $(INSTALL_LIB)/$(SONAME)
	ln -sf $(SONAME) $(INSTALL_LIB)/libkfac.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@BLASDIR@|$(BLASDIR)|g' \
	    kfac.pc.in > $(INSTALL_LIB)/pkgconfig/kfac.pc
	install -m 755 $(B)/kfac $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(B)/kfac.1 $(INSTALL_MAN)/
	install -m 644 nets/*.net $(INSTALL_NETS)/
	install -d $(DESTDIR)$(PREFIX)/share/doc/kfac
	install -m 644 LICENSE $(DESTDIR)$(PREFIX)/share/doc/kfac/
	install -d $(INSTALL_PY)
	install -m 644 $(PY_SRC) $(INSTALL_PY)/
	printf '"""Written by make install: the library this copy of the package loads."""\nLIBRARY = "%s"\n' \
	  "$(PREFIX)/lib/$(SONAME)" > $(INSTALL_PY)/_install.py
	@case "$(PREFIX)" in /usr/local|/usr) ;; *) echo "the Python package is in $(PREFIX)/$(PY_REL): put it on PYTHONPATH";; esac

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(PUBLIC_H)) $(INSTALL_LIB)/libkfac.a $(INSTALL_LIB)/libkfac.so.$(VERSION) \
	      $(INSTALL_LIB)/$(SONAME) $(INSTALL_LIB)/libkfac.so $(INSTALL_LIB)/pkgconfig/kfac.pc \
	      $(DESTDIR)$(PREFIX)/bin/kfac $(addprefix $(INSTALL_NETS)/,$(notdir $(wildcard nets/*.net)))
	rm -f $(DESTDIR)$(PREFIX)/share/doc/kfac/LICENSE $(INSTALL_MAN)/kfac.1
	rm -f $(addprefix $(INSTALL_PY)/,$(notdir $(PY_SRC)) _install.py)
	rm -rf $(INSTALL_PY)/__pycache__
	rmdir $(INSTALL_PY) 2>/dev/null || true
	rmdir $(INSTALL_NETS) $(DESTDIR)$(PREFIX)/share/kfac $(DESTDIR)$(PREFIX)/share/doc/kfac 2>/dev/null || true

# The embedding examples (examples/) built as a user builds them:
# installed into a temporary prefix, compiled with pkg-config's flags
# alone, run with the installed nets, $(DATA) and a scratch file name;
# first the installed program's --version against the installed kfac.pc,
# and the installed man page, which must name every flag `kfac train
# --help` lists; last, `make uninstall` must remove them all again.
# tests/test_api.c runs this target, so `make test` covers it.
EMBED_SRC := $(wildcard examples/*.c)
embed-test: all
	@set -e; tmp=$$(mktemp -d /tmp/kfac-embed.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory -s install PREFIX=$$tmp DESTDIR= >/dev/null; \
	export PKG_CONFIG_PATH=$$tmp/lib/pkgconfig; \
	v=$$(pkg-config --modversion kfac); cli=$$($$tmp/bin/kfac --version); \
	if [ "$$cli" != "kfac $$v" ]; then echo "embed: kfac --version says '$$cli', kfac.pc says '$$v'"; exit 1; fi; \
	echo "embed: version $$v (kfac.pc, kfac --version)"; \
	man=$$tmp/share/man/man1/kfac.1; test -s $$man || { echo "embed: no man page $$man"; exit 1; }; \
	flags=$$($$tmp/bin/kfac train --help | sed -n 's/^  \(--[a-z0-9-]*\).*/\1/p'); \
	for f in $$flags; do grep -qF "\\fB$$(echo $$f | sed 's/-/\\-/g')\\fR" $$man || { echo "embed: the man page lacks $$f"; exit 1; }; done; \
	echo "embed: man page names the $$(echo $$flags | wc -w) flags of kfac train --help"; \
	if [ -n "$(EMBED_FLAGS)" ]; then echo "embed: the Python package not loaded (a sanitized library needs its runtime first)"; else \
	py=$$(cd / && env -u KFAC_LIBRARY PYTHONPATH=$$tmp/$(PY_REL) /usr/bin/python3 -m kfac --version --library); \
	if [ "$$py" != "$$(printf '%s\n%s' "$$tmp/lib/$(SONAME)" "kfac $$v (libkfac $$v)")" ]; then \
	  echo "embed: the installed Python package says '$$py'"; exit 1; fi; \
	echo "embed: python3 -m kfac --version: kfac $$v, the installed library"; fi; \
	for src in $(EMBED_SRC); do \
	  exe=$$tmp/$$(basename $$src .c); \
	  $(CC) -O2 -Wall -Wextra -Werror $(EMBED_FLAGS) -o $$exe $$src $$(pkg-config --cflags --libs kfac); \
	  echo "embed: $$(basename $$exe)"; \
	  $$exe $$tmp/share/kfac/nets $(DATA) $$tmp/checkpoint; \
	done; \
	$(MAKE) --no-print-directory -s uninstall PREFIX=$$tmp DESTDIR= >/dev/null; \
	for f in $$man $$tmp/bin/kfac $$tmp/lib/libkfac.a $$tmp/include/kfac.h $$tmp/$(PY_REL)/kfac; do \
	  test ! -e $$f || { echo "embed: make uninstall left $$f"; exit 1; }; done; \
	echo "embed: make uninstall removed the man page, the program, the library, the headers and the Python package"

# The data-parallel equivalence test (tests/mpi/): Open MPI installed if
# missing, the MPI build (in $(B)-mpi), then 2 ranks of one thread each,
# oversubscribed if need be, against one process. As root Open MPI wants
# the ALLOW_RUN_AS_ROOT pair; single_copy_mechanism=none avoids CMA, which
# containers often forbid. The timeout turns a hang into a failure.
MPI_RUN_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
               OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
MPIRUN := env $(MPI_RUN_ENV) mpirun --oversubscribe -x OMP_NUM_THREADS
MPI_NET ?= nets/tiny.net nets/tiny-cnn.net
mpi-test:
	$(MAKE) --no-print-directory deps EXTRA_PKGS="$(MPI_PKGS)"
	$(MAKE) --no-print-directory MPI=1 all test_mpi_equiv
	timeout 600 $(MPIRUN) -np 2 $(patsubst %-mpi,%,$(B))-mpi/test_mpi_equiv $(MPI_NET) $(DATA)

# Throughput with 1 and 2 ranks (bench/MPI.md), interleaved, medians.
bench-mpi:
	$(MAKE) --no-print-directory deps EXTRA_PKGS="$(MPI_PKGS)"
	$(MAKE) --no-print-directory MPI=1 all
	bench/bench_mpi.sh $(patsubst %-mpi,%,$(B))-mpi $(NET) $(DATA) $(or $(REPEATS),3)

# the MPI build's own programs (MPI=1 only: they call MPI directly)
test_mpi_equiv: $(B)/test_mpi_equiv
$(B)/test_mpi_equiv: tests/mpi/test_mpi_equiv.c $(B)/libkfac.a
	$(CC) $(CFLAGS) -o $@ $< $(B)/libkfac.a $(LDLIBS)
