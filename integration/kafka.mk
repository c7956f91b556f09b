# Kafka integration targets; included from the top-level Makefile
# (`include integration/kafka.mk`), whose GO, SHELL and `build` they use.
#
#   make kafka-jars   fetch the pinned Apache Kafka jars (kafka.version in
#                     integration/kafka/pom.xml) from Maven Central into
#                     .cache/kafka/<version>/libs; does nothing when they
#                     are there already. Needs Java 17+ and Maven 3.
#   make test-kafka   run a real Kafka broker on a tierfs mount
#                     (integration/...: TIERFS_KAFKA=1 go test -race): produce
#                     and consume, the policy moving and promoting, retention,
#                     topic deletion, compaction, broker restarts and kill -9,
#                     tierfs killed under the broker, a three-broker cluster.
#                     Needs root and /dev/fuse. TIERFS_KAFKA_KEEP=1 keeps each
#                     test's work dir (broker, tools and tierfs logs).
#   (the Kafka benchmarks are in integration/bench: make bench)

GO ?= go
KAFKA_TEST_TIMEOUT ?= 20m
KAFKA_TEST_RUN ?= .

.PHONY: kafka-jars test-kafka

kafka-jars:
	@missing=""; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "kafka-jars: missing packages:$$missing (no apt-get; install them by hand)" >&2; exit 1; \
		fi; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "==> installing$$missing"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	bash ./integration/kafka/fetch.sh

test-kafka: kafka-jars build
	TIERFS_KAFKA=1 $(GO) test -race -count=1 -timeout $(KAFKA_TEST_TIMEOUT) -run '$(KAFKA_TEST_RUN)' -v ./integration/
