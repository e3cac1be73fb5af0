"""Measurement tooling, apart from the service it measures: `make bench` (benchmarks.bench), `make loadtest`
(benchmarks.loadtest) and the explanation-faithfulness study (benchmarks.faithfulness). All three start
real servers through benchmarks.server, the same entry point as `make serve`."""
