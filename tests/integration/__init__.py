"""Integration tests: against real servers (exchange-server processes, MariaDB, Kafka, Redis)."""
