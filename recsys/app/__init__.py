"""The use cases: one module per `recsys` command, each holding the one function that command calls. Only here are
the library, the embedder, the index and the recommender combined (see ARCHITECTURE.md)."""
