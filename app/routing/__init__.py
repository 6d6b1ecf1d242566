"""Which model answers: the catalogue, candidates, cooldowns, the fallback policy and the
walk over the candidates."""
