"""The use cases: one module per `recsys` command, each holding the one function that command calls, and the helpers
several of them share (`settings`, `output`, `taste`, `ranking`, `encoder_scores`). A use case never imports another
(ARCHITECTURE.md, "Import rules"); what two share lives in a helper or below, in `recsys.pipeline`."""
